"""The control surface as a typed Protocol, and the documents it returns.

Two transports implement `Control`: the engine-side `ControlService` (orchestrator.control.service: the CLI's
local mode, the REST API, the monitor) and `RemoteControl` (orchestrator.control.remote: the same calls over
the REST API with a token). The CLI is written against `Control` only, so it has one code path for both.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from orchestrator.model.events import Event
from orchestrator.model.records import Job, Run
from orchestrator.model.states import JOB_TERMINAL, RUN_ENDED, JobState, RunState
from solvers.base import Progress


class QueuePlace(BaseModel):
    """A waiting job's place: 1 is the head of the engine's queue (None: the engine leased its nodes and the
    site's scheduler, e.g. Slurm, queued the allocation); the expected start (epoch seconds) when one can be
    given, and what it waits for or why there is no estimate."""

    position: int | None
    expected_start: float | None = None
    why: str = ""


class JobStatus(Job):
    """A job as users see it: the record (spec with secrets masked), its runs, the commands it accepts now and
    its limits' deadlines (limit -> epoch seconds). GET /jobs/{job} is its JSON."""

    runs_detail: list[Run] = Field(default_factory=list)
    allowed: list[str] = Field(default_factory=list)
    deadlines: dict[str, float] = Field(default_factory=dict)
    queue: QueuePlace | None = None

    @property
    def current(self) -> Run | None:
        """The current run, when it is listed."""
        return next((r for r in self.runs_detail if r.id == self.current_run), None)


class RunBrief(BaseModel):
    """A run at a glance: its id, state and progress."""

    id: str
    state: RunState | None = None
    progress: Progress | None = None


class JobSummary(Job):
    """A job in a listing, with its current run at a glance (`run`)."""

    run: RunBrief | None = None
    queue: QueuePlace | None = None


class HistoryRun(BaseModel):
    id: str
    state: RunState
    attempt: int | None = None
    revision: int | None = None
    mode: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    reason: str | None = None


class History(BaseModel):
    """A job's spec revisions (who, when, what changed) and its runs; GET /jobs/{job}/history is its JSON."""

    id: str
    revision: int
    revisions: list[dict[str, Any]]
    runs: list[HistoryRun]


@runtime_checkable
class Control(Protocol):
    """Every user-facing operation one user may ask of the engine, whichever way they reach it."""

    @property
    def user(self) -> str: ...

    # -- submit (specs and sweep plans are parsed once, by the caller: control.sweeps.read_submission)
    def submit(self, spec: Any, extra: dict[str, Any] | None = None) -> str: ...
    def submit_sweep(self, plan: Any) -> tuple[str, list[str]]: ...

    # -- read
    def resolve(self, job: str) -> str: ...
    def status(self, job: str) -> JobStatus: ...
    def overview(self, limit: int = 100, owner: str | None = None) -> list[JobSummary]: ...
    def events(self, job: str, after: str = "0-0", block_ms: int | None = None) -> list[Event]: ...
    def follow(self, job: str, after: str = "0-0", until: Callable[[Event], bool] | None = None,
               timeout: float | None = None) -> Iterator[Event]: ...
    def read_log(self, job: str, run_id: str | None = None, offset: int = 0,
                 step: str | None = None) -> tuple[bytes, int]: ...
    def series(self, job: str, run_id: str | None = None, names: list[str] | None = None,
               last: int = 500) -> dict[str, Any]: ...
    def history(self, job: str) -> History: ...
    def wait(self, job: str, predicate: Callable[[JobStatus], bool], timeout: float = 600,
             poll: float = 0.2) -> JobStatus: ...

    # -- control commands and edits
    def pause(self, job: str, freeze: bool = False) -> JobStatus: ...
    def resume(self, job: str) -> JobStatus: ...
    def restart(self, job: str) -> JobStatus: ...
    def rerun(self, job: str) -> JobStatus: ...
    def terminate(self, job: str) -> Job: ...
    def terminate_sweep(self, sweep: str) -> tuple[str, list[Job]]: ...
    def edit(self, job: str, sets: list[str] | tuple[str, ...] = (), files: dict[str, str] | None = None,
             live: bool = False, message: str = "") -> dict[str, Any]: ...

    # -- sweeps
    def sweeps(self, limit: int = 50) -> list[dict[str, Any]]: ...
    def sweep_status(self, sweep: str) -> tuple[str, list[dict[str, Any]]]: ...

    # -- nodes
    def nodes(self, backend: str | None = None) -> list[dict[str, Any]]: ...
    def drain(self, node: str, reason: str = "", backend: str | None = None) -> dict[str, Any]: ...
    def undrain(self, node: str, force: bool = False, backend: str | None = None) -> tuple[int, str | None]: ...

    # -- files
    def files(self, job: str) -> dict[str, Any]: ...
    def download(self, job: str, path: str | None, to: Path) -> tuple[str, list[str]]: ...

    # -- input uploads (made by submit through the API; listed and deleted here)
    def uploads(self, owner: str | None = None) -> list[dict[str, Any]]: ...
    def remove_upload(self, upload_id: str, owner: str | None = None) -> dict[str, Any]: ...

    # -- the user's keys, desktop access rules, desktops, usage
    def keys(self) -> list[dict[str, Any]]: ...
    def add_key(self, text: str) -> dict[str, Any]: ...
    def remove_key(self, which: str) -> list[str]: ...
    def access_rules(self) -> dict[str, Any]: ...
    def set_access_rules(self, rules: list[str] | None) -> list[str] | None: ...
    def desktop(self, job: str, wait: float = 0) -> dict[str, Any]: ...
    # -- notifications: the user's webhooks and email addresses, signing secret, test send, delivery log
    def notify_targets(self, everyone: bool = False) -> list[dict[str, Any]]: ...
    def notify_add(self, kind: str, address: str, events: list[str] | None = None) -> dict[str, Any]: ...
    def notify_remove(self, target_id: str) -> dict[str, Any]: ...
    def notify_secret(self, rotate: bool = False) -> str: ...
    def notify_test(self) -> list[dict[str, Any]]: ...
    def notify_log(self, job: str | None = None, limit: int = 100) -> list[dict[str, Any]]: ...
    def usage(self, owner: str | None = None, limit: int = 1000, since: float | None = None,
              until: float | None = None) -> dict[str, Any]: ...


def wait_until(status: Callable[[str], JobStatus], job: str, predicate: Callable[[JobStatus], bool],
               timeout: float, poll: float) -> JobStatus:
    """Poll `status(job)` until predicate(doc) holds; TimeoutError otherwise (both transports wait so)."""
    deadline = time.monotonic() + timeout
    while True:
        doc = status(job)
        if predicate(doc):
            return doc
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {doc.id} still {doc.state.value} after {timeout:.0f}s")
        time.sleep(poll)


def run_finished(doc: JobStatus) -> bool:
    """The job's current run has ended (or the job itself has)."""
    if doc.state in JOB_TERMINAL or doc.state is JobState.FAILED:
        return True
    current = doc.current
    return current is not None and current.state in RUN_ENDED
