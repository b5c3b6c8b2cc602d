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

from orchestrator.api.deps import API, client_for
from orchestrator.control.service import ControlService
from orchestrator.control.uploads import check_inside_uploads, path_fields, uploads_root  # noqa: F401  (re-exported)
from orchestrator.model.errors import UserError

router = APIRouter(prefix=API, tags=["files"])
MAX_MEMBERS = 100_000


@router.post("/uploads", status_code=201, summary="Upload input files (a tar.gz body); returns the folder to "
                                                     "name in a spec")
async def upload(request: Request, client: ControlService = Depends(client_for)) -> dict[str, Any]:
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
