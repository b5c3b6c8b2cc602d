"""`e2e` commands for a job's files: list them (results, or the live work folder) and download them."""

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
