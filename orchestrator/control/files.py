"""A job's files: their manifest and their download, from the live work folder while the job is up and from its
stored results (checked against their sha256) after; a file put into a running job's work folder; and the files
its runs write (the solver log), read confined.

Everything under a job's folder is written by the job itself, which may swap any of it for a symlink (to
/proc/self/environ, another user's results, the engine's keys). So every read of a job-written file goes
through `open_job_file`: walked from the engine's own jobs folder one name at a time, no symlink followed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from orchestrator.model.errors import InvalidState, UserError
from orchestrator.model.events import EventKind
from orchestrator.model.states import JobState
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


def put_work_file(service: ControlService, job: str, path: str, source: BinaryIO) -> dict[str, Any]:
    """Put a file into a running job's work folder (`work/<run>/...`, as `files` names it), written as the job's
    OS account: its live sync then carries it into the run directory, as an edit made on the desktop would."""
    from orchestrator.cluster.identity import account_for, acting_as
    from orchestrator.cluster.owned import make_dirs_confined, write_confined_from
    from orchestrator.model.paths import JobPaths
    from orchestrator.sync.confine import check_rel
    from orchestrator.sync.tree import scratch_name

    record = service.job(job)
    rel = check_rel(path.strip("/"))
    if not rel.startswith("work/"):
        raise UserError(f"path {path!r}: files go into the work folder; name it work/<run>/<file>, as "
                        f"`e2e files {record.id}` lists it")
    if scratch_name(rel.rsplit("/", 1)[-1]):
        raise UserError(f"path {path!r}: a temp, lock or scratch name, which the sync never carries")
    if not record.spec.get("desktop", {}).get("enabled", True):
        raise InvalidState(f"job {record.id} has no desktop, so no live sync carries its work folder to the "
                           "run: change its inputs with `e2e edit --file` and restart")
    if record.state is not JobState.UP:
        raise InvalidState(f"job {record.id} is {record.state.value}: files go into the work folder of a job "
                           "that is up")
    work = JobPaths.for_job(service.settings.root, record.id).work
    target = work / rel[len("work/"):]
    # as the account, from its own work folder down, never following a link: a job that made work/<run> a
    # link to somewhere else gets an error, not a file written there
    with acting_as(account_for(record.account)):
        make_dirs_confined(work, target.parent, 0o700)
        size = write_confined_from(work, target, source, 0o600)
    service.store.append_event(record.id, EventKind.CONTROL, {"action": "file-put", "by": service.user,
                                                              "path": rel, "bytes": size})
    return {"job": record.id, "path": rel, "bytes": size}


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
