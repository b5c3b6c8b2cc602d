"""A job's files: their manifest and their download, from the live work folder while the job is up and from its
stored results (checked against their sha256) after."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.control.service import ControlService


def file_store(service: ControlService, job: str) -> tuple[str, Any, dict[str, Any]]:
    from orchestrator.sync.results import files_of

    record = service.job(job)
    store = files_of(service.settings.root, record)
    return record.id, store, store.manifest(record.id) or {"files": [], "links": [], "bytes": 0}


def files(service: ControlService, job: str) -> dict[str, Any]:
    job_id, store, manifest = file_store(service, job)
    return {"job": job_id, "location": store.location(job_id), **manifest}


def download(service: ControlService, job: str, path: str | None, to: Path) -> tuple[str, list[str]]:
    from orchestrator.sync.results import download

    job_id, store, _ = file_store(service, job)
    to.mkdir(parents=True, exist_ok=True)
    return job_id, download(store, job_id, path, to.resolve())
