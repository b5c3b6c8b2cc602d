"""ControlService: the engine side of the control surface, one user's every operation in one place.

The CLI's local mode, the REST API and the monitor all call it. It reads and writes the store and sends
tasks (by their names in orchestrator.worker.names); effects on nodes, live edits included, run in workers.

Scoping is built in: the engine machine's own user (the CLI, `admin=None`) sees every job and finds it by any
unique start of its id; an API account sees only its own jobs (others' answer 404, exactly as jobs that do not
exist, so ids cannot be probed) unless it is an admin.

This module holds who is asking, scoping and the reads; every other operation is a one-line delegation to the
module of its concern (see the package docstring for why).
"""

from __future__ import annotations

import getpass
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from orchestrator.control import desktop, files, forms, nodes, notify, steering, submission, uploads
from orchestrator.control.desktop import DesktopRefused
from orchestrator.control.nodes import HostKeyOffer, Rendered
from orchestrator.control.protocol import (
    History,
    HistoryRun,
    JobStatus,
    JobSummary,
    QueuePlace,
    RunBrief,
    wait_until,
)
from orchestrator.control.queue import forecasts, scheduler_place
from orchestrator.control.steering import ALLOWED_PAUSE, TERMINABLE
from orchestrator.control.sweeps import SweepPlan
from orchestrator.engine.forecast import Forecast
from orchestrator.engine.limits import deadlines
from orchestrator.model.commands import allowed_commands
from orchestrator.model.errors import NotFound, SpecError
from orchestrator.model.events import Event
from orchestrator.model.paths import JobPaths
from orchestrator.model.records import Job
from orchestrator.model.settings import Settings, get_settings
from orchestrator.model.spec import validate_spec
from orchestrator.model.states import JobState
from orchestrator.store.jobs import JobStore
from orchestrator.store.series import finite

# Kept importable from here, where callers found them before the split.
__all__ = ["ALLOWED_PAUSE", "TERMINABLE", "ControlService", "DesktopRefused", "HostKeyOffer", "Rendered"]


class ControlService:
    """One user's connection to the engine (the `Control` protocol, engine side)."""

    def __init__(self, settings: Settings | None = None, store: JobStore | None = None, user: str | None = None,
                 *, admin: bool | None = None, celery: Any = None, address: str | None = None) -> None:
        self.settings = settings or get_settings()
        self._store = store
        self._user = user or getpass.getuser()
        self.scoped = admin is not None     # an API account (scoped), not the engine machine's own user
        self.admin = admin is not False     # sees and controls every job
        self.address = address              # where the user connects from, when known (API): for my-ip
        self._celery = celery
        self.on_refused: Callable[[str], None] = lambda job_id: None  # the API records who asked
        self.job_scope = ""                 # a job-scoped token's one job: every other answers 404

    @property
    def user(self) -> str:
        return self._user

    @property
    def store(self) -> JobStore:
        """The engine's store, connected on first use (render and trust need none)."""
        if self._store is None:
            self._store = JobStore.from_url(self.settings.resolved_redis_url(),
                                            events_maxlen=self.settings.events_maxlen)
        return self._store

    @property
    def celery(self) -> Any:
        if self._celery is None:
            from orchestrator.worker.celery_app import make_app

            self._celery = make_app(self.settings)
        return self._celery

    def send(self, task: str, *args: Any, **options: Any) -> None:
        """Send a worker task by its name (orchestrator.worker.names)."""
        self.celery.send_task(task, args=list(args), **options)

    # -- who may see what
    def visible(self, record: Job) -> bool:
        return self.admin or record.owner == self.user

    def resolve(self, job: str) -> str:
        """The full id of the one job (the caller's, when scoped) whose id starts with `job`."""
        if self.job_scope:  # never a prefix search: its "matches N jobs" would name the user's other jobs
            if job and len(job) <= 64 and self.job_scope.startswith(job):
                return self.job_scope
            raise NotFound(f"no job {job!r}")
        if not self.scoped:
            return self.store.find_job(job)
        if not job or len(job) > 64:
            raise NotFound(f"no job {job!r}")
        [exact] = self.store.owners([job])
        if exact is not None:
            if self.admin or exact == self.user:
                return job
            self.on_refused(job)
            raise NotFound(f"no job {job!r}")
        candidates = self.store.ids_starting(job)
        if not self.admin and candidates:
            candidates = [j for j, owner in zip(candidates, self.store.owners(candidates), strict=True)
                          if owner == self.user]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise NotFound(f"no job {job!r}")
        raise NotFound(f"{job!r} matches {len(candidates)} of your jobs: {', '.join(candidates[:5])}; "
                       "give more of the id")

    # -- read
    def job(self, job: str) -> Job:
        return self.store.get_job(self.resolve(job))

    def status(self, job: str) -> JobStatus:
        """The job with its runs, the commands it accepts now and its limits' deadlines, as one document."""
        record = self.job(job)
        runs = self.store.list_runs(record.id)
        current = next((r for r in runs if r.id == record.current_run), None)
        return JobStatus.model_validate({
            **record.model_dump(), "runs_detail": runs, "spec": self._masked_spec(record),
            "allowed": [c.value for c in allowed_commands(record.state, current.state if current else None)],
            "deadlines": deadlines(record, current), "queue": self._queue_place(record)})

    def _queue_place(self, record: Job, known: dict[str, Forecast] | None = None) -> QueuePlace | None:
        if record.state is JobState.PROVISIONING:
            return scheduler_place(self.settings, record)
        if record.state is not JobState.QUEUED:
            return None
        found = (forecasts(self.store) if known is None else known).get(record.id)
        if found is None:
            return None
        return QueuePlace(position=found.position, expected_start=found.starts_at, why=found.why)

    def _masked_spec(self, record: Job) -> dict[str, Any]:
        """The spec as users see it: licence keys and other secrets masked."""
        try:
            return validate_spec(record.spec, check_paths=False).model_dump(mode="json")
        except SpecError:
            return {"name": record.spec.get("name"), "solver": {"name": record.solver}}

    def jobs(self, limit: int = 100, owner: str | None = None) -> list[Job]:
        """The newest jobs the caller may see (only `owner`'s when given; a scoped non-admin: only theirs)."""
        if self.job_scope:
            return [self.store.get_job(self.job_scope)]
        if not self.admin:
            owner = self.user
        return self.store.list_jobs(limit, owner=owner)

    def overview(self, limit: int = 100, owner: str | None = None) -> list[JobSummary]:
        """The newest jobs, each with its current run's id, state and progress (`run`)."""
        rows = []
        records = self.jobs(limit, owner)
        known = forecasts(self.store) if any(r.state is JobState.QUEUED for r in records) else {}
        for record in records:
            try:
                run = self.store.get_run(record.id, record.current_run)
                brief = RunBrief(id=run.id, state=run.state, progress=run.progress)
            except NotFound:
                brief = RunBrief(id=record.current_run)
            rows.append(JobSummary.model_validate({**record.model_dump(), "run": brief,
                                                   "queue": self._queue_place(record, known)}))
        return rows

    def events(self, job: str, after: str = "0-0", block_ms: int | None = None, count: int = 1000) -> list[Event]:
        return self.store.events(self.resolve(job), after, block_ms=block_ms, count=count)

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
                 limit: int = 1 << 20, step: str | None = None) -> tuple[bytes, int]:
        """Up to `limit` bytes of the run's solver log (or of the log of its pre-processing `step`) from
        `offset`, and the offset after them (read confined: a log the job swapped for a symlink is refused,
        never followed)."""
        return files.read_log(self, job, run_id, offset, limit, step)

    def series(self, job: str, run_id: str | None = None, names: list[str] | None = None,
               last: int = 500) -> dict[str, Any]:
        """A run's monitored series (function-object tables, .sta/.cvg, report files): every name, and the
        latest `last` points of the named ones (all when none are named); NaN/inf read as null."""
        record = self.job(job)
        run = self.store.get_run(record.id, run_id or record.current_run)
        known = self.store.series_names(record.id, run.id)
        unknown = sorted(set(names or ()) - set(known))
        if unknown:
            raise NotFound(f"run {run.id} has no series {', '.join(map(repr, unknown))}; "
                           f"it has: {', '.join(known) or 'none yet'}")
        chosen = names or known
        return {"run": run.id, "names": known,
                "series": {n: finite(self.store.series_points(record.id, run.id, n, last)) for n in chosen}}

    def log_path(self, job: str, run_id: str | None = None) -> Path | None:
        record = self.job(job)
        run = self.store.get_run(record.id, run_id or record.current_run)
        if not run.log_file:
            return None
        return JobPaths.for_job(self.settings.root, record.id).run(run.id).root / run.log_file

    def history(self, job: str) -> History:
        """The job's spec revisions (who, when, what changed) and its runs with their attempts."""
        record = self.job(job)
        revisions = [{"revision": 1, "at": record.created_at, "by": record.owner, "changes": [],
                      "files": [], "message": "submitted"}] + self.store.revisions(record.id)
        runs = [HistoryRun(id=r.id, state=r.state, attempt=r.attempt, revision=r.revision,
                           mode=r.mode.value if r.mode else None, started_at=r.started_at, ended_at=r.ended_at,
                           reason=r.reason) for r in self.store.list_runs(record.id)]
        return History(id=record.id, revision=record.revision or 1, revisions=revisions, runs=runs)

    def edit_form(self, job: str) -> dict[str, Any]:
        """The job's edit form: its solver's options as fields with their current values, which a running
        solver takes live, and whether "apply live" can be offered now."""
        from solvers.base import registry

        doc = self.status(job)
        return forms.job_form(registry().get(doc.solver), doc.spec.get("solver") or {}, doc.allowed)

    def solvers(self) -> list[dict[str, Any]]:
        """The installed solver plugins with their options schemas (what a submission form is built from)."""
        return forms.solver_catalog()

    def wait(self, job: str, predicate: Callable[[JobStatus], bool], timeout: float = 600,
             poll: float = 0.2) -> JobStatus:
        """Poll the job document until predicate(doc) holds; TimeoutError otherwise."""
        return wait_until(self.status, job, predicate, timeout, poll)

    def usage(self, owner: str | None = None, limit: int = 1000, since: float | None = None,
              until: float | None = None) -> dict[str, Any]:
        """Core-hours per job and per user (the caller's own unless admin), desktop hours shown apart."""
        from orchestrator.engine.usage import usage

        if not self.admin:
            owner = self.user
        return usage(self.store, owner, limit, since, until)

    # -- submit and sweeps (control/submission.py)
    def submit_file(self, path: str | Path) -> str:
        """Submit a plain spec file (no sweep)."""
        return submission.submit_file(self, path)

    def submit_data(self, data: dict[str, Any], base_dir: Path | None = None) -> str:
        """Submit a plain spec given as data (no sweep)."""
        return submission.submit_data(self, data, base_dir)

    def submit_document(self, data: Any, sweep: list[str] | tuple[str, ...] = (),
                        base_dir: Path | None = None, confine: bool = False) -> dict[str, Any]:
        """A spec sent as data (the API, the monitor's form), parsed once into one job or a sweep's members and
        submitted: {"id": ...} or {"sweep": ..., "jobs": [...]}. With confine, its input folders must be inside
        the caller's uploads (relative paths resolve against them)."""
        return submission.submit_document(self, data, sweep, base_dir, confine)

    def submit(self, spec: Any, extra: dict[str, Any] | None = None) -> str:
        """Queue a validated spec; checks it fits the backend before anything is created."""
        return submission.submit(self, spec, extra)

    def submit_sweep(self, plan: SweepPlan) -> tuple[str, list[str]]:
        """Queue every member of a sweep as its own job, in order, under one new sweep id; every member is
        checked against the backend before the first is created."""
        return submission.submit_sweep(self, plan)

    def sweeps(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest sweeps with how their members stand."""
        return submission.sweeps(self, limit)

    def sweep_status(self, sweep: str) -> tuple[str, list[dict[str, Any]]]:
        """A sweep's full id and one row per member."""
        return submission.sweep_status(self, sweep)

    # -- input uploads (control/uploads.py)
    def add_upload(self, archive: Path) -> dict[str, Any]:
        """Unpack a received tar archive as a new upload of the caller's, within E2E_UPLOAD_MAX_EXTRACTED and
        what is left of the caller's E2E_UPLOAD_QUOTA (over either: TooLarge, nothing kept)."""
        return uploads.add_upload(self, archive)

    def uploads(self, owner: str | None = None) -> list[dict[str, Any]]:
        """The caller's uploads (an admin may name another user): id, bytes, files, name, created, and the jobs
        not yet terminated that use each (`used_by`)."""
        return uploads.list_uploads(self, owner)

    def remove_upload(self, upload_id: str, owner: str | None = None) -> dict[str, Any]:
        """Delete one of the caller's uploads; another user's id is NotFound; one a job not yet terminated
        uses is refused (InvalidState) naming the jobs."""
        return uploads.remove_upload(self, upload_id, owner)

    # -- control commands and edits (control/steering.py)
    def terminate(self, job: str) -> Job:
        """Stop the solver, collect results, release the nodes. Idempotent: a second call changes nothing.
        The job's record (not its status document: the command is in flight)."""
        return steering.terminate(self, job)

    def terminate_sweep(self, sweep: str) -> tuple[str, list[Job]]:
        """Terminate every member job of a sweep (those already terminated stay as they are)."""
        return steering.terminate_sweep(self, sweep)

    def pause(self, job: str, freeze: bool = False) -> JobStatus:
        """Graceful: the solver writes a checkpoint and exits (run PAUSED; cluster stays up).
        freeze=True: every process of the run is suspended on every node (run FROZEN) until resume()."""
        return steering.pause(self, job, freeze)

    def resume(self, job: str) -> JobStatus:
        """Continue a frozen run where it stood."""
        return steering.resume(self, job)

    def restart(self, job: str) -> JobStatus:
        """Continue the current run from its latest checkpoint, with the edits so far, as its next attempt."""
        return steering.restart(self, job)

    def rerun(self, job: str) -> JobStatus:
        """A new run (run-00N) from the original inputs plus the edits so far; earlier runs are kept."""
        return steering.rerun(self, job)

    def edit(self, job: str, sets: list[str] | tuple[str, ...] = (), files: dict[str, str] | None = None,
             live: bool = False, message: str = "") -> dict[str, Any]:
        """Record a new spec revision (and replaced input files, LOCAL path -> RELPATH) after validating it
        whole, as a submitted spec is; with live=True, a worker also applies it to the running solver first.
        Invalid edits raise SpecError and change nothing."""
        return steering.edit(self, job, sets, files, live, message)

    # -- nodes, host keys, render (control/nodes.py)
    def nodes(self, backend: str | None = None) -> list[dict[str, Any]]:
        """Every node: free, leased (to which job) or drained; its load; whether it answers. A scoped
        non-admin sees others' job ids and drain notes only as that."""
        return nodes.nodes(self, backend)

    def drain(self, node: str, reason: str = "", backend: str | None = None) -> dict[str, Any]:
        """Take a node out of service: no new job gets it (a job holding it keeps it until the job ends)."""
        return nodes.drain(self, node, reason, backend)

    def undrain(self, node: str, force: bool = False, backend: str | None = None) -> tuple[int, str | None]:
        """Put a drained node back into service once it answers; leftover processes of the run that lost it
        are killed first. (killed, warning)."""
        return nodes.undrain(self, node, force, backend)

    def host_key(self, node: str) -> HostKeyOffer:
        """The host key an inventory node presents now, and whether the engine trusts it already."""
        return nodes.host_key(self, node)

    def trust_host_key(self, offer: HostKeyOffer, replace: bool = False) -> None:
        """Add the offered key to the engine's managed known_hosts (replacing a different one with replace)."""
        nodes.trust_host_key(self, offer, replace)

    def render(self, spec_path: Path, out_dir: Path, hosts: str | None = None) -> Rendered:
        """Dry run: write every file a run would get (inputs, hostfile, run.sh, wrapper.sh); start nothing."""
        return nodes.render(self, spec_path, out_dir, hosts)

    # -- files (control/files.py)
    def file_store(self, job: str) -> tuple[str, Any, dict[str, Any]]:
        """(job id, where its files are read from, their manifest): the live work folder while the job is up,
        its stored results (with sha256) after."""
        return files.file_store(self, job)

    def put_work_file(self, job: str, path: str, source: BinaryIO) -> dict[str, Any]:
        """Put a file into a running job's work folder (as its account); the live sync takes it to the run."""
        return files.put_work_file(self, job, path, source)

    def files(self, job: str) -> dict[str, Any]:
        return files.files(self, job)

    def download(self, job: str, path: str | None, to: Path) -> tuple[str, list[str]]:
        """Copy the job's stored files under `path` (all when None) into `to`, checked against their sha256."""
        return files.download(self, job, path, to)

    # -- SSH keys, access rules, desktops (control/desktop.py)
    def keys(self) -> list[dict[str, Any]]:
        """The caller's SSH public keys (installed on their jobs' head nodes)."""
        return desktop.keys(self)

    def add_key(self, text: str) -> dict[str, Any]:
        return desktop.add_key(self, text)

    def remove_key(self, which: str) -> list[str]:
        return desktop.remove_key(self, which)

    def my_address(self) -> str | None:
        """The address the engine sees the caller at ('my-ip'): the API's client's, or this process's as Redis
        sees it (the CLI on the engine's machine)."""
        return desktop.my_address(self)

    def access_rules(self) -> dict[str, Any]:
        """The caller's default rules (None: the built-in everywhere) and their address now."""
        return desktop.access_rules(self)

    def set_access_rules(self, rules: list[str] | None) -> list[str] | None:
        """Set (None: clear) the caller's default rules; my-ip is fixed to their address now."""
        return desktop.set_access_rules(self, rules)

    # -- notifications (control/notify.py)
    def notify_targets(self, everyone: bool = False) -> list[dict[str, Any]]:
        """The caller's webhooks and email addresses (an admin with `everyone`: all users')."""
        return notify.targets(self, everyone)

    def notify_add(self, kind: str, address: str, events: list[str] | None = None) -> dict[str, Any]:
        return notify.add(self, kind, address, events)

    def notify_remove(self, target_id: str) -> dict[str, Any]:
        return notify.remove(self, target_id)

    def notify_secret(self, rotate: bool = False) -> str:
        return notify.secret(self, rotate)

    def notify_test(self) -> list[dict[str, Any]]:
        return notify.test(self)

    def notify_log(self, job: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return notify.delivery_log(self, job, limit)

    def desktop_session(self, job: str, wait: float = 0) -> Any:
        """The job's ready desktop (desktop.connect.Desktop, holding its secret), waiting up to `wait`."""
        return desktop.desktop_session(self, job, wait)

    def check_desktop_access(self, session: Any, entry: str, address: str | None = None) -> str:
        """Refuse (and record on the job) a caller whose address is outside the desktop's rules; the address."""
        return desktop.check_desktop_access(self, session, entry, address)

    def desktop(self, job: str, wait: float = 0) -> dict[str, Any]:
        """The desktop's URL (with its token and password), VNC port and SSH tunnel, for the caller's address."""
        return desktop.desktop(self, job, wait)

    def job_token(self, job: str) -> dict[str, Any]:
        """A token that reads and controls this job only, until it is terminated (the desktop panel's)."""
        return desktop.job_token(self, job)

    def desktop_link(self, job: str, address: str | None = None) -> dict[str, Any]:
        """A one-time, short-lived link to the desktop through the API (its path, with the code after '#')."""
        return desktop.desktop_link(self, job, address)

    def desktop_share(self, job: str, expires_in: int = 3600, address: str | None = None) -> dict[str, Any]:
        """A view-only link to the desktop for another person, reusable until it expires (its path)."""
        return desktop.desktop_share(self, job, expires_in, address)

    def open_desktop_stream(self, job: str, address: str | None) -> Any:
        """A byte stream to the job's Xvnc for the API's WebSocket proxy, if `address` may reach the desktop."""
        return desktop.open_desktop_stream(self, job, address)

    def set_desktop_password(self, job: str, password: str, view_password: str | None = None) -> int:
        return desktop.set_desktop_password(self, job, password, view_password)

    def head_is_local(self, session: Any) -> bool:
        """The desktop's head node is this machine (a native viewer connects to it directly)."""
        return desktop.head_is_local(session)

    def open_desktop_tunnel(self, session: Any, local_port: int, identity: str | None = None) -> Any:
        """An SSH tunnel from 127.0.0.1:local_port to the desktop's VNC port (a started Forwarder: wait(),
        close()); the host keys the engine trusts for its nodes count too. The caller's own connection."""
        return desktop.open_desktop_tunnel(self, session, local_port, identity)
