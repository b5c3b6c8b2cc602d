"""File routes: list a job's files (live work folder, or stored results with sha256) and download them,
one file or everything as a tar.gz stream; put a file into a running job's work folder."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import threading
from typing import Any, Iterator

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from orchestrator.api.deps import API, client_for
from orchestrator.control.service import ControlService
from orchestrator.control.uploads import incoming_dir
from orchestrator.model.errors import NotFound
from orchestrator.sync.confine import check_rel
from orchestrator.sync.results import CHUNK, ResultsStore

router = APIRouter(prefix=API, tags=["files"])


def _files(client: ControlService, job: str) -> tuple[str, ResultsStore, dict[str, Any]]:
    return client.file_store(job)


@router.get("/jobs/{job}/files", summary="The job's files: live work folder while up, results (sha256) after")
def list_files(job: str, client: ControlService = Depends(client_for)) -> dict[str, Any]:
    job_id, store, manifest = _files(client, job)
    return {"job": job_id, "live": bool(manifest.get("live")), "files": manifest["files"],
            "links": manifest.get("links", []), "bytes": manifest.get("bytes", 0)}


@router.get("/jobs/{job}/files/{path:path}", summary="Download one file (as `files` lists it)",
            response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
def download_file(job: str, path: str, client: ControlService = Depends(client_for)) -> StreamingResponse:
    job_id, store, manifest = _files(client, job)
    rel = check_rel(path.strip("/"))
    entry = next((f for f in manifest["files"] if f["path"] == rel), None)
    if entry is None:
        raise NotFound(f"no file {path!r} in job {job_id}; `GET /jobs/{job_id}/files` lists them")
    handle = store.open(job_id, rel)
    headers = {"Content-Disposition": f'attachment; filename="{rel.rsplit("/", 1)[-1]}"'}
    if entry.get("sha256"):
        headers["X-Checksum-Sha256"] = entry["sha256"]
    return StreamingResponse(_chunks(handle), media_type="application/octet-stream", headers=headers)


@router.put("/jobs/{job}/files/{path:path}", status_code=201,
            summary="Put a file (the raw body) into a running job's work folder, work/<run>/...: the live sync "
                    "takes it to the run, as an edit on the desktop would")
async def put_file(job: str, path: str, request: Request,
                   client: ControlService = Depends(client_for)) -> dict[str, Any]:
    # The body goes to the engine's private folder first, within the upload limit; then, off the event loop,
    # into the work folder as the job's account.
    cap = client.settings.api_max_upload
    with tempfile.NamedTemporaryFile(dir=incoming_dir(client.settings.root), prefix="put-") as tmp:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise HTTPException(413, f"the file is larger than E2E_API_MAX_UPLOAD ({cap} bytes)")
            tmp.write(chunk)
        tmp.flush()
        tmp.seek(0)
        return await run_in_threadpool(client.put_work_file, job, path, tmp)


@router.get("/jobs/{job}/archive", summary="Every file of the job (or a folder's) as one tar.gz stream",
            response_class=StreamingResponse, responses={200: {"content": {"application/gzip": {}}}})
def download_archive(job: str, folder: str = "", client: ControlService = Depends(client_for)) -> StreamingResponse:
    job_id, store, manifest = _files(client, job)
    prefix = check_rel(folder.strip("/")) if folder.strip("/") else ""
    chosen = [f for f in manifest["files"] if not prefix or f["path"] == prefix or f["path"].startswith(prefix + "/")]
    if not chosen:
        raise NotFound(f"no files under {folder!r} in job {job_id}")
    return StreamingResponse(_tar_stream(store, job_id, chosen), media_type="application/gzip",
                             headers={"Content-Disposition": f'attachment; filename="{job_id}.tar.gz"'})


def _chunks(handle: Any) -> Iterator[bytes]:
    with handle:
        while block := handle.read(CHUNK):
            yield block


class _Pipe(io.RawIOBase):
    """A write end the tar writer fills and the response drains, a bounded buffer between two threads."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.cond = threading.Condition()
        self.closed_for_write = False
        self.aborted = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        with self.cond:
            self.cond.wait_for(lambda: self.aborted or sum(map(len, self.chunks)) < 4 * CHUNK)
            if self.aborted:
                raise BrokenPipeError("the client went away")
            self.chunks.append(bytes(data))
            self.cond.notify_all()
        return len(data)

    def finish(self) -> None:
        with self.cond:
            self.closed_for_write = True
            self.cond.notify_all()

    def abort(self) -> None:
        with self.cond:
            self.aborted = True
            self.cond.notify_all()

    def read_chunks(self) -> Iterator[bytes]:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.chunks or self.closed_for_write)
                if not self.chunks:
                    return
                block = b"".join(self.chunks)
                self.chunks.clear()
                self.cond.notify_all()
            yield block


def _tar_stream(store: ResultsStore, job_id: str, entries: list[dict[str, Any]]) -> Iterator[bytes]:
    pipe = _Pipe()

    def write() -> None:
        try:
            with tarfile.open(fileobj=pipe, mode="w|gz") as tar:
                for entry in entries:
                    with store.open(job_id, entry["path"]) as handle:
                        info = tarfile.TarInfo(entry["path"])
                        info.size = os.fstat(handle.fileno()).st_size  # a live file may have grown since listed
                        info.mtime = int(entry.get("mtime") or 0)
                        tar.addfile(info, handle)
        except BrokenPipeError:
            pass
        finally:
            pipe.finish()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        yield from pipe.read_chunks()
    finally:
        pipe.abort()
        writer.join(timeout=5)
