"""`e2e` commands for a job's files: list them (results, or the live work folder), download them, and put one
into a running job's work folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from orchestrator.cli.common import JSON_OPT, _age, _client, _dump, app, out


@app.command()
def files(job: str, as_json: bool = JSON_OPT) -> None:
    """List a job's files: its results (with sha256) once terminated, the live work folder while it is up."""
    manifest = _client().files(job)
    job_id, location = manifest["job"], manifest["location"]
    if as_json:
        _dump(manifest)
        return
    live = bool(manifest.get("live"))
    table = Table(title=f"{'live files' if live else 'results'} of {job_id}  ({location})")
    table.add_column("path", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("modified" if live else "sha256")
    for entry in manifest["files"]:
        last = _age(entry["mtime"]) + " ago" if live else entry["sha256"][:16]
        table.add_row(repr(entry["path"])[1:-1], f"{entry['size']:,}", last)
    out.print(table)
    out.print(f"{len(manifest['files'])} files, {manifest['bytes']:,} bytes")


@app.command("download")
def download_cmd(job: str, path: str = typer.Argument(None, help="a file or folder, as `e2e files` lists it "
                                                                   "(default: everything)"),
                 to: Path = typer.Option(..., "--to", help="folder to download into (created if missing)"),
                 as_json: bool = JSON_OPT) -> None:
    """Download a job's files (checked against their sha256) into a folder, named the way `cp -r` would."""
    job_id, written = _client().download(job, path, to)
    if as_json:
        _dump({"job": job_id, "to": str(to), "files": written})
        return
    out.print(f"downloaded {len(written)} file{'s' if len(written) != 1 else ''} into {to}")


@app.command("put")
def put_cmd(file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="a local file"),
            job: str = typer.Argument(..., envvar="E2E_JOB", help="job id (default: $E2E_JOB)"),
            to: str = typer.Option(None, "--to", help="where, as `e2e files` names it (default: "
                                                      "work/<current run>/<file name>)"),
            as_json: bool = JSON_OPT) -> None:
    """Put a file into a running job's work folder (as the job's account): its live sync takes it into the run
    directory, as an edit made on the desktop would; the next restart (or the solver, if it re-reads) uses it."""
    client = _client()
    if to is None:
        to = f"work/{client.status(job).current_run}/{file.name}"
    with open(file, "rb") as source:
        put = client.put_work_file(job, to, source)
    if as_json:
        _dump(put)
        return
    out.print(f"put {put['bytes']:,} bytes into {put['path']} of {put['job']}")
