"""Input uploads over HTTP: POST a tar.gz to make one (unpacked within the extraction cap and the caller's quota),
GET the caller's list, DELETE one. The rules live in orchestrator.control.uploads."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from orchestrator.api.deps import API, client_for
from orchestrator.control.service import ControlService
from orchestrator.control.uploads import (  # noqa: F401  (check_inside_uploads, path_fields: re-exported)
    TooLarge,
    check_inside_uploads,
    incoming_dir,
    path_fields,
)
from orchestrator.model.errors import UserError

router = APIRouter(prefix=API, tags=["files"])


@router.post("/uploads", status_code=201, summary="Upload input files (a tar.gz body); returns the folder to "
                                                     "name in a spec")
async def upload(request: Request, client: ControlService = Depends(client_for)) -> dict[str, Any]:
    # The body goes to a private folder first: the caller's uploads only ever hold complete, checked uploads.
    with tempfile.NamedTemporaryFile(dir=incoming_dir(client.settings.root), prefix="archive-",
                                     suffix=".tar.gz") as tmp:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            tmp.write(chunk)
        tmp.flush()
        if size == 0:
            raise UserError("empty upload: send the input folder as a tar.gz body")
        try:
            # unpacking is disk- and CPU-bound: off the event loop, so other requests go on meanwhile
            made = await run_in_threadpool(client.add_upload, Path(tmp.name))
        except TooLarge as exc:
            raise HTTPException(413, exc.message) from None
    return {**made, "archive_bytes": size}


@router.get("/uploads", summary="Your uploads: id, unpacked bytes, files, name, created, and the jobs not yet "
                                "terminated that use each (admins: ?owner=NAME)")
def list_uploads(owner: str | None = None, client: ControlService = Depends(client_for)) -> list[dict[str, Any]]:
    return client.uploads(owner)


@router.delete("/uploads/{upload}", summary="Delete one of your uploads (409 while a job not yet terminated "
                                            "uses it)")
def remove_upload(upload: str, owner: str | None = None,
                  client: ControlService = Depends(client_for)) -> dict[str, Any]:
    return client.remove_upload(upload, owner)
