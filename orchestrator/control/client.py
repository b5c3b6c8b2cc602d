"""The Python API: submit, inspect, follow and terminate jobs (the CLI and later the REST API call this)."""

from __future__ import annotations

import getpass
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from orchestrator.cluster import get_backend
from orchestrator.desktop.access import resolve_for_submit
from orchestrator.engine.attempts import next_attempt
from orchestrator.engine.edits import apply_assignments, check_files, diff, parse_assignments, save_files
from orchestrator.engine.limits import deadlines
from orchestrator.model.commands import TERMINABLE_JOBS, Command, allowed_commands, check_allowed
from orchestrator.model.errors import InvalidState, NotFound, SpecError, UserError
from orchestrator.model.events import Event, EventKind
from orchestrator.model.paths import JobPaths
from orchestrator.model.settings import Settings, get_settings
from orchestrator.model.spec import load_spec, spec_for_store, validate_spec
from orchestrator.model.states import JOB_TERMINAL, RUN_ENDED, JobState, RunState
from orchestrator.store.jobs import JobStore
from orchestrator.worker.celery_app import make_app

TERMINABLE = tuple(TERMINABLE_JOBS)


class Client:
    """One engine connection for one user."""

    def __init__(self, settings: Settings | None = None, store: JobStore | None = None, user: str | None = None):
        self.settings = settings or get_settings()
        self.store = store or JobStore.from_url(self.settings.resolved_redis_url(),
                                                events_maxlen=self.settings.events_maxlen)
        self.user = user or getpass.getuser()
        self.address: str | None = None  # where the user connects from, when known (API); for desktop.access my-ip
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

    def submit(self, spec, extra: dict[str, Any] | None = None) -> str:
        """Queue a validated spec; checks it fits the backend before anything is created."""
        backend = self._check_fits(spec)
        spec = resolve_for_submit(spec, self.store, self.user, self.address)  # desktop.access: default, my-ip
        job_id = self.store.create_job(name=spec.name, owner=self.user, spec=spec_for_store(spec),
                                       backend=backend, solver=spec.solver.name, extra=extra)
        self.celery.send_task("e2e.provision", args=[job_id])
        return job_id

    def submit_sweep(self, plan) -> tuple[str, list[str]]:
        """Queue every member of a sweep (sweeps.SweepPlan) as its own job, in order, under one new sweep id;
        every member is checked against the backend before the first is created."""
        from orchestrator.control.sweeps import new_sweep_id

        for member in plan.members:
            self._check_fits(member.spec)
            resolve_for_submit(member.spec, self.store, self.user, self.address)  # raises before any job exists
        sweep_id = new_sweep_id()
        job_ids = []
        for member in plan.members:
            job_id = self.submit(member.spec, extra={"sweep": sweep_id, "sweep_index": member.index,
                                                     "sweep_values": member.values})
            job_ids.append(job_id)
        return sweep_id, job_ids

    def _check_fits(self, spec) -> str:
        """The backend's name, once the spec's node and core counts fit it; SpecError otherwise."""
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
        return backend.name

    # -- read
    def resolve(self, job: str) -> str:
        return self.store.find_job(job)

    def job(self, job: str) -> dict[str, Any]:
        return self.store.get_job(self.resolve(job))

    def status(self, job: str) -> dict[str, Any]:
        """The job with its runs, the commands it accepts now and its limits' deadlines, as one document."""
        record = self.job(job)
        record["runs_detail"] = self.store.list_runs(record["id"])
        current = next((r for r in record["runs_detail"] if r["id"] == record["current_run"]), None)
        record["allowed"] = [c.value for c in allowed_commands(record["state"], current and current["state"])]
        record["deadlines"] = deadlines(record, current)
        record["spec"] = self._masked_spec(record)
        return record

    def _masked_spec(self, record: dict[str, Any]) -> dict[str, Any]:
        """The spec as users see it: licence keys and other secrets masked."""
        try:
            return validate_spec(record["spec"], check_paths=False).model_dump(mode="json")
        except SpecError:
            return {"name": record["spec"].get("name"), "solver": {"name": record["solver"]}}

    def jobs(self, limit: int = 100, owner: str | None = None) -> list[dict[str, Any]]:
        """The newest jobs (only `owner`'s when given)."""
        return self.store.list_jobs(limit, owner=owner)

    def overview(self, limit: int = 100, owner: str | None = None) -> list[dict[str, Any]]:
        """The newest jobs, each with its current run's id, state and progress (`run`)."""
        rows = self.jobs(limit, owner)
        for row in rows:
            try:
                run = self.store.get_run(row["id"], row["current_run"])
            except NotFound:
                run = {"id": row["current_run"], "state": None}
            row["run"] = {"id": run["id"], "state": run["state"], "progress": run.get("progress")}
        return rows

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

    def read_log(self, job: str, run_id: str | None = None, offset: int = 0,
                 limit: int = 1 << 20) -> tuple[bytes, int]:
        """Up to `limit` bytes of the run's solver log from `offset`, and the offset after them."""
        path = self.log_path(job, run_id)
        if path is None or not path.exists():
            return b"", offset
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(limit)
        return data, offset + len(data)

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
            check_allowed(Command.TERMINATE, record, None)
        if self.store.transition_job(job_id, JobState.TERMINATING, expect=TERMINABLE,
                                     terminate_requested_at=time.time()):
            self._audit(job_id, "terminate")
        self.celery.send_task("e2e.terminate", args=[job_id])
        return self.store.get_job(job_id)

    def terminate_sweep(self, sweep: str) -> tuple[str, list[dict[str, Any]]]:
        """Terminate every member job of a sweep (those already terminated stay as they are)."""
        from orchestrator.control.sweeps import resolve_sweep

        sweep_id = resolve_sweep(self.store, sweep)
        return sweep_id, [self.terminate(job_id) for job_id in self.store.sweep_members(sweep_id)]

    def _current(self, job: str) -> tuple[dict[str, Any], dict[str, Any]]:
        record = self.job(job)
        return record, self.store.get_run(record["id"], record["current_run"])

    def _audit(self, job_id: str, action: str, **data: Any) -> None:
        self.store.append_event(job_id, EventKind.CONTROL, {"action": action, "by": self.user, **data})

    def _race(self, job_id: str, command: Command) -> InvalidState:
        record, run = self._current(job_id)
        check_allowed(command, record, run)  # raises with the state that won the race
        return InvalidState(f"cannot {command.value}: job {job_id} changed meanwhile; try again")

    def pause(self, job: str, freeze: bool = False) -> dict[str, Any]:
        """Graceful: the solver writes a checkpoint and exits (run PAUSED; cluster stays up).
        freeze=True: every process of the run is suspended on every node (run FROZEN) until resume()."""
        record, run = self._current(job)
        job_id = record["id"]
        command = Command.FREEZE if freeze else Command.PAUSE
        check_allowed(command, record, run)
        if freeze:
            ok = self.store.transition_run(job_id, run["id"], RunState.FROZEN, expect=[RunState.RUNNING],
                                           data={"by": self.user}, frozen_at=time.time())
        else:
            ok = self.store.transition_run(job_id, run["id"], RunState.STOPPING, expect=ALLOWED_PAUSE,
                                           data={"intent": "pause", "by": self.user}, stop_intent="pause",
                                           stop_requested_at=time.time())
        if not ok:
            raise self._race(job_id, command)
        self._audit(job_id, command.value, run=run["id"])
        self.celery.send_task("e2e.signals", args=[job_id, run["id"]])
        return self.status(job_id)

    def resume(self, job: str) -> dict[str, Any]:
        """Continue a frozen run where it stood."""
        record, run = self._current(job)
        check_allowed(Command.RESUME, record, run)
        if not self.store.transition_run(record["id"], run["id"], RunState.RUNNING, expect=[RunState.FROZEN],
                                         data={"by": self.user}, frozen_at=None):
            raise self._race(record["id"], Command.RESUME)
        self._audit(record["id"], "resume", run=run["id"])
        self.celery.send_task("e2e.signals", args=[record["id"], run["id"]])
        return self.status(record["id"])

    def restart(self, job: str) -> dict[str, Any]:
        """Continue the current run from its latest checkpoint, with the edits so far, as its next attempt."""
        record, run = self._current(job)
        job_id = record["id"]
        check_allowed(Command.RESTART, record, run)
        started = next_attempt(self.store, self.settings.root, record, run, by=self.user)
        if started is None:
            raise self._race(job_id, Command.RESTART)
        self._audit(job_id, "restart", run=run["id"], **started)
        self.celery.send_task("e2e.launch", args=[job_id, run["id"]])
        return self.status(job_id)

    def rerun(self, job: str) -> dict[str, Any]:
        """A new run (run-00N) from the original inputs plus the edits so far; earlier runs are kept."""
        record, run = self._current(job)
        job_id = record["id"]
        check_allowed(Command.RERUN, record, run)
        run_id = self.store.add_run(job_id, after=run["id"], revision=record.get("revision") or 1, mode="fresh")
        if run_id is None:
            raise self._race(job_id, Command.RERUN)
        self._audit(job_id, "rerun", run=run_id, after=run["id"])
        self.celery.send_task("e2e.launch", args=[job_id, run_id])
        return self.status(job_id)

    def edit(self, job: str, sets: list[str] | tuple[str, ...] = (), files: dict[str, str] | None = None,
             live: bool = False, message: str = "") -> dict[str, Any]:
        """Record a new spec revision (and replaced input files) after validating it whole; with live=True,
        also apply it to the running solver. Invalid edits raise SpecError and change nothing."""
        record, run = self._current(job)
        job_id = record["id"]
        check_allowed(Command.EDIT_LIVE if live else Command.EDIT, record, run)
        assignments = parse_assignments(list(sets))
        checked_files = check_files(files or {})
        if not assignments and not checked_files:
            raise UserError("nothing to edit: give --set key=value and/or --file LOCAL=RELPATH")
        for _ in range(5):  # optimistic: retry if another edit lands in between
            old_spec = validate_spec(record["spec"], check_paths=False, source=f"job {job_id} spec")
            new_spec = validate_spec(apply_assignments(record["spec"], assignments), source="edit")
            changes = diff(old_spec.model_dump(mode="json"), new_spec.model_dump(mode="json"))
            if not changes and not checked_files:
                raise UserError("the edit changes nothing")
            if live:
                applied = self._apply_live(record, run, old_spec, new_spec, checked_files)
            revision_now = record.get("revision") or 1
            entry = {"by": self.user, "changes": changes, "files": sorted(map(str, checked_files)),
                     "live": live, "run": run["id"], "message": message}
            if live:
                entry["applied_live"] = applied
            if checked_files:
                save_files(JobPaths.for_job(self.settings.root, job_id), revision_now + 1, checked_files)
            revision = self.store.add_revision(job_id, revision_now, spec_for_store(new_spec), entry)
            if revision is not None:
                return {**entry, "revision": revision}
            record, run = self._current(job)
            check_allowed(Command.EDIT_LIVE if live else Command.EDIT, record, run)
        raise InvalidState(f"cannot edit job {job_id}: other edits keep landing; try again")

    def _apply_live(self, record, run, old_spec, new_spec, files) -> list[str]:
        from orchestrator.engine.lifecycle import Lifecycle
        from orchestrator.engine.runctl import RunFilesOnNode

        lc = Lifecycle.create(self.store, self.settings)
        backend = lc.backend_of(record)
        nodes = lc.nodes_of(record, backend)
        root = lc.paths(record["id"]).run(run["id"]).root
        run_files = RunFilesOnNode(backend, nodes[0], root)
        applied = lc.plugin_of(record).apply_live(old_spec.solver, new_spec.solver, run_files)
        for rel, src in files.items():
            run_files.write_text(str(rel), src.read_text())
            applied.append(str(rel))
        return applied

    def history(self, job: str) -> dict[str, Any]:
        """The job's spec revisions (who, when, what changed) and its runs with their attempts."""
        record = self.job(job)
        revisions = [{"revision": 1, "at": record["created_at"], "by": record["owner"], "changes": [],
                      "files": [], "message": "submitted"}] + self.store.revisions(record["id"])
        runs = [{k: r.get(k) for k in ("id", "state", "attempt", "revision", "mode", "started_at", "ended_at",
                                       "reason")} for r in self.store.list_runs(record["id"])]
        return {"id": record["id"], "revision": record.get("revision") or 1, "revisions": revisions, "runs": runs}

    # -- the user's SSH keys (installed on their jobs' head nodes)
    def keys(self) -> list[dict[str, Any]]:
        from orchestrator.desktop.keys import KeyRegistry
        return KeyRegistry(self.store).list(self.user)

    def add_key(self, text: str) -> dict[str, Any]:
        from orchestrator.desktop.keys import KeyRegistry
        key = KeyRegistry(self.store).add(self.user, text)
        return {"type": key.type, "bits": key.bits, "fingerprint": key.fingerprint, "comment": key.comment}

    def remove_key(self, which: str) -> list[str]:
        from orchestrator.desktop.keys import KeyRegistry
        return KeyRegistry(self.store).remove(self.user, which)

    # -- waiting
    def wait(self, job: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 600,
             poll: float = 0.2) -> dict[str, Any]:
        """Poll the job document until predicate(doc) holds; TimeoutError otherwise."""
        return wait_until(self.status, job, predicate, timeout, poll)


def wait_until(status: Callable[[str], dict[str, Any]], job: str, predicate: Callable[[dict[str, Any]], bool],
               timeout: float, poll: float) -> dict[str, Any]:
    """Poll `status(job)` until predicate(doc) holds (the in-process and the remote client both wait so)."""
    deadline = time.monotonic() + timeout
    while True:
        doc = status(job)
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
    return current is not None and current["state"] in RUN_ENDED


ALLOWED_PAUSE = (RunState.RUNNING, RunState.FROZEN)
