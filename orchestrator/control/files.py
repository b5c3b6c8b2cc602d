"""A job's files: their manifest and their download, from the live work folder while the job is up and from its
stored results (checked against their sha256) after; and the files its runs write (the solver log), read confined.

Everything under a job's folder is written by the job itself, which may swap any of it for a symlink (to
/proc/self/environ, another user's results, the engine's keys). So every read of a job-written file goes
through `open_job_file`: walked from the engine's own jobs folder one name at a time, no symlink followed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from orchestrator.model.errors import UserError
from orchestrator.sync.confine import open_confined

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


def open_job_file(home: Path, job_id: str, rel: str) -> BinaryIO:
    """A file the job wrote, `rel` inside its folder (runs/run-001/log.simpleFoam), for reading: walked from
    $E2E_HOME/jobs (the engine's, which no job can change) with O_NOFOLLOW at every name, so a symlink
    anywhere on the way, the job's folder included, is refused (UserError), and only a regular file opens."""
    return open_confined(Path(home) / "jobs", f"{job_id}/{rel}")


@dataclass(frozen=True)
class RunLog:
    """Where a run's solver log is: the job, the run, and the log's name inside the run directory (None
    before the plugin named one)."""

    job_id: str
    run_id: str
    name: str | None

    @property
    def rel(self) -> str | None:
        return f"runs/{self.run_id}/{self.name}" if self.name else None


def run_log(service: ControlService, job: str, run_id: str | None = None, step: str | None = None) -> RunLog:
    """The run's solver log, or the log of the step called `step` (a name its plugin gave: UserError naming the
    run's steps when it has no such step)."""
    record = service.job(job)
    run = service.store.get_run(record.id, run_id or record.current_run)
    if step is None:
        return RunLog(record.id, run.id, run.log_file or None)
    logs = run.step_logs or {}
    name = logs.get(step) or (step if step in logs.values() else None)  # `setFields` or `log.setFields`
    if name is None:
        known = ", ".join(logs) if logs else "none (it runs no steps before the solver, or has not started)"
        raise UserError(f"run {run.id} of {record.id} has no step {step!r}; its steps: {known}")
    return RunLog(record.id, run.id, name)


def read_job_file(home: Path, job_id: str, rel: str, offset: int, limit: int) -> tuple[bytes, int] | None:
    """Up to `limit` bytes of a job-written file from `offset` (opened by open_job_file), and the file's size;
    None while it does not exist."""
    try:
        with open_job_file(home, job_id, rel) as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(offset)
            return fh.read(limit), size
    except FileNotFoundError:
        return None


def read_log(service: ControlService, job: str, run_id: str | None = None, offset: int = 0,
             limit: int = 1 << 20, step: str | None = None) -> tuple[bytes, int]:
    """Up to `limit` bytes of the run's solver log (or of its step's log) from `offset`, and the offset after."""
    log = run_log(service, job, run_id, step)
    found = read_job_file(service.settings.root, log.job_id, log.rel, offset, limit) if log.rel else None
    data = found[0] if found else b""
    return data, offset + len(data)
