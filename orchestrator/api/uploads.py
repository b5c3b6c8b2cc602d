"""Input uploads: a user's case folders arrive as tar.gz, unpacked safely under their own uploads folder,
and specs submitted through the API may only name folders inside it."""

from __future__ import annotations

import secrets
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from orchestrator.api.access import ScopedClient
from orchestrator.api.app import API, client_for
from orchestrator.model.errors import SpecError, UserError

router = APIRouter(prefix=API, tags=["files"])
MAX_MEMBERS = 100_000


def uploads_root(home: Path, user: str) -> Path:
    return home / "uploads" / user


def path_fields(model: Any, prefix: str = "") -> list[tuple[str, Path]]:
    """Every Path value in a validated spec (input folders, case files), with its field name."""
    found: list[tuple[str, Path]] = []
    if isinstance(model, BaseModel):
        for name in type(model).model_fields:
            found += path_fields(getattr(model, name), f"{prefix}{name}.")
    elif isinstance(model, Path):
        found.append((prefix.rstrip("."), model))
    elif isinstance(model, (list, tuple)):
        for index, item in enumerate(model):
            found += path_fields(item, f"{prefix}{index}.")
    elif isinstance(model, dict):
        for key, item in model.items():
            found += path_fields(item, f"{prefix}{key}.")
    return found


def check_inside_uploads(spec: Any, base: Path) -> None:
    """Refuse a spec naming a path outside the user's uploads (another user's files, the server's)."""
    base = base.resolve()
    problems = [(field, "must be a folder you uploaded (POST /uploads), named relative to your uploads")
                for field, path in path_fields(spec)
                if not Path(path).resolve().is_relative_to(base)]
    if problems:
        raise SpecError(problems)


@router.post("/uploads", status_code=201, summary="Upload input files (a tar.gz body); returns the folder to "
                                                     "name in a spec")
async def upload(request: Request, client: ScopedClient = Depends(client_for)) -> dict[str, Any]:
    base = uploads_root(client.settings.root, client.user)
    base.mkdir(parents=True, exist_ok=True)
    upload_id = "up-" + secrets.token_hex(6)
    with tempfile.NamedTemporaryFile(dir=base, prefix=".incoming-", suffix=".tar.gz") as tmp:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            tmp.write(chunk)
        tmp.flush()
        if size == 0:
            raise UserError("empty upload: send the input folder as a tar.gz body")
        staging = base / f".{upload_id}.tmp"
        try:
            files = _unpack(Path(tmp.name), staging)
            staging.rename(base / upload_id)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return {"id": upload_id, "path": upload_id, "files": files, "bytes": size}


def _unpack(archive: Path, dest: Path) -> int:
    """Extract with tarfile's 'data' filter: no absolute paths, no '..', no links out, no devices."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            if len(members) > MAX_MEMBERS:
                raise UserError(f"the upload has {len(members)} entries; at most {MAX_MEMBERS}")
            dest.mkdir()
            tar.extractall(dest, filter="data")
    except tarfile.FilterError as exc:
        raise UserError(f"refused upload: {exc}") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(f"not a readable tar.gz archive: {exc}") from None
    return sum(1 for m in members if m.isfile())
