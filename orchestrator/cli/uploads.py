"""`e2e uploads`: list and delete your input uploads (what `e2e --server submit` sent), locally or via --server."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from orchestrator.cli.common import JSON_OPT, _age, _client, _dump, app, out
from orchestrator.control.uploads import human

uploads_app = typer.Typer(help="Your input uploads: list them, delete the ones no job needs any more.",
                          no_args_is_help=True)
app.add_typer(uploads_app, name="uploads")

OWNER_OPT = typer.Option(None, "--user", help="another user's uploads (admins only)")


@uploads_app.command("ls")
def list_uploads(owner: Optional[str] = OWNER_OPT, as_json: bool = JSON_OPT) -> None:
    """Your uploads, oldest first: id, unpacked size, files, what they hold, and the jobs that still use them."""
    rows = _client().uploads(owner)
    if as_json:
        _dump(rows)
        return
    if not rows:
        out.print("no uploads")
        return
    table = Table("ID", "SIZE", "FILES", "AGE", "NAME", "USED BY", box=None)
    for row in rows:
        table.add_row(row["id"], human(int(row["bytes"])), str(row["files"]), _age(float(row["created"])),
                      row["name"] or "-", ", ".join(row["used_by"]) or "-")
    out.print(table)
    out.print(f"{len(rows)} upload{'s' if len(rows) != 1 else ''}, {human(sum(int(r['bytes']) for r in rows))}")


@uploads_app.command("rm")
def remove_upload(upload_ids: list[str] = typer.Argument(..., metavar="ID...", help="upload ids (`e2e uploads ls`)"),
                  owner: Optional[str] = OWNER_OPT, as_json: bool = JSON_OPT) -> None:
    """Delete uploads; one that a job not yet terminated still uses is refused, naming the jobs."""
    client = _client()
    removed = [client.remove_upload(upload_id, owner) for upload_id in upload_ids]
    if as_json:
        _dump(removed)
        return
    for row in removed:
        out.print(f"removed {row['id']} ({human(int(row['bytes']))} freed)")
