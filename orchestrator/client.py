"""The Python API: submit, inspect, follow and terminate jobs (the CLI and later the REST API call this)."""

from __future__ import annotations

import getpass
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .celery_app import make_app
from .cluster import get_backend
from .desktop.access import resolve_for_submit
from .errors import InvalidState, SpecError
from .events import Event, EventKind
from .paths import JobPaths
from .settings import Settings, get_settings
from .spec import load_spec, spec_for_store, validate_spec
from .states import JOB_TERMINAL, RUN_TERMINAL, JobState
from .store import JobStore

TERMINABLE = (JobState.QUEUED, JobState.PROVISIONING, JobState.UP, JobState.FAILED)


class Client:
    """One engine connection for one user."""

    def __init__(self, settings: Settings | None = None, store: JobStore | None = None, user: str | None = None):
        self.settings = settings or get_settings()
        self.store = store or JobStore.from_url(self.settings.resolved_redis_url(),
                                                events_maxlen=self.settings.events_maxlen)
        self.user = user or getpass.getuser()
        self._celery = None

    @property
    def celery(self):
        if self._celery is None:
            self._celery = make_app(self.settings)
        return self._celery

    # -- submit
    def submit_file(self, path: str | Path) -> str:
        return self.submit(load_spec(path))

    def submit_data(self, data: dict[str, Any], base_dir: Path | None = None) -> str:
        return self.submit(validate_spec(data, base_dir=base_dir))

    def submit(self, spec) -> str:
        """Queue a validated spec; checks it fits the backend before anything is created."""
        backend = get_backend(spec.cluster.backend, self.settings)
        nodes = backend.inventory()
        problems = []
        if spec.cluster.nodes > len(nodes):
            problems.append(("cluster.nodes", f"{spec.cluster.nodes} requested, but the {backend.name} "
                                              f"backend has {len(nodes)} nodes"))
        max_cores = min((n.cores for n in nodes), default=0)
        if spec.cluster.cores_per_node > max_cores:
            problems.append(("cluster.cores_per_node", f"{spec.cluster.cores_per_node} requested, but "
                                                       f"{backend.name} nodes have {max_cores} cores"))
        if problems:
            raise SpecError(problems)
        spec = resolve_for_submit(spec, self.store, self.user)  # desktop.access: user default, my-ip
        job_id = self.store.create_job(name=spec.name, owner=self.user, spec=spec_for_store(spec),
                                       backend=backend.name, solver=spec.solver.name)
        self.celery.send_task("e2e.provision", args=[job_id])
        return job_id

    # -- read
    def resolve(self, job: str) -> str:
        return self.store.find_job(job)

    def job(self, job: str) -> dict[str, Any]:
        return self.store.get_job(self.resolve(job))

    def status(self, job: str) -> dict[str, Any]:
        """The job with its runs, as one document."""
        record = self.job(job)
        record["runs_detail"] = self.store.list_runs(record["id"])
        return record

    def jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.store.list_jobs(limit)

    def events(self, job: str, after: str = "0-0", block_ms: int | None = None) -> list[Event]:
        return self.store.events(self.resolve(job), after, block_ms=block_ms)

    def follow(self, job: str, after: str = "0-0", until: Callable[[Event], bool] | None = None,
               timeout: float | None = None) -> Iterator[Event]:
        """Yield events as they come, from `after`, until `until(event)` is true or the timeout passes."""
        job_id = self.resolve(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            for event in self.store.events(job_id, after, block_ms=500):
                after = event.id
                yield event
                if until is not None and until(event):
                    return

    def log_path(self, job: str, run_id: str | None = None) -> Path | None:
        record = self.job(job)
        run = self.store.get_run(record["id"], run_id or record["current_run"])
        if not run.get("log_file"):
            return None
        return JobPaths.for_job(self.settings.root, record["id"]).run(run["id"]).root / run["log_file"]

    # -- control
    def terminate(self, job: str) -> dict[str, Any]:
        """Stop the solver, collect results, release the nodes. Idempotent: a second call changes nothing."""
        job_id = self.resolve(job)
        record = self.store.get_job(job_id)
        if record["state"] in (JobState.TERMINATING, JobState.TERMINATED):
            return record
        if record["state"] not in TERMINABLE:
            raise InvalidState(f"job {job_id} is {record['state'].value} and cannot be terminated")
        if self.store.transition_job(job_id, JobState.TERMINATING, expect=TERMINABLE,
                                     terminate_requested_at=time.time()):
            self.store.append_event(job_id, EventKind.CONTROL, {"action": "terminate", "by": self.user})
        self.celery.send_task("e2e.terminate", args=[job_id])
        return self.store.get_job(job_id)

    # -- waiting
    def wait(self, job: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 600,
             poll: float = 0.2) -> dict[str, Any]:
        """Poll the job document until predicate(doc) holds; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            doc = self.status(job)
            if predicate(doc):
                return doc
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {doc['id']} still {doc['state'].value} after {timeout:.0f}s")
            time.sleep(poll)


def run_finished(doc: dict[str, Any]) -> bool:
    """The job's current run has ended (or the job itself has)."""
    if doc["state"] in JOB_TERMINAL or doc["state"] is JobState.FAILED:
        return True
    current = next((r for r in doc["runs_detail"] if r["id"] == doc["current_run"]), None)
    return current is not None and current["state"] in RUN_TERMINAL
