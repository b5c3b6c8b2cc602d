"""ControlService: the engine side of the control surface, one user's every operation in one place.

The CLI's local mode, the REST API and the monitor all call it. It reads and writes the store and sends
tasks (by their names in orchestrator.worker.names); effects on nodes, live edits included, run in workers.

Scoping is built in: the engine machine's own user (the CLI, `admin=None`) sees every job and finds it by any
unique start of its id; an API account sees only its own jobs (others' answer 404, exactly as jobs that do not
exist, so ids cannot be probed) unless it is an admin.
"""

from __future__ import annotations

import getpass
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from orchestrator.control.protocol import History, HistoryRun, JobStatus, JobSummary, RunBrief, wait_until
from orchestrator.control.sweeps import SweepPlan, member_rows, new_sweep_id, parse_submission, resolve_sweep, summary
from orchestrator.control.uploads import check_inside_uploads, uploads_root
from orchestrator.desktop.access import (
    EVERYWHERE,
    MY_IP,
    client_address,
    normalise_rules,
    resolve_for_submit,
    set_user_rules,
    user_rules,
)
from orchestrator.desktop.access import resolve as resolve_rules
from orchestrator.engine.attempts import next_attempt
from orchestrator.engine.edits import apply_assignments, check_files, diff, parse_assignments, save_files
from orchestrator.engine.limits import deadlines
from orchestrator.engine.live_edit import APPLIED, FAILED
from orchestrator.model import errors
from orchestrator.model.commands import TERMINABLE_JOBS, Command, allowed_commands, check_allowed
from orchestrator.model.errors import InfrastructureError, InvalidState, NotFound, SpecError, UserError
from orchestrator.model.events import Event, EventKind
from orchestrator.model.paths import JobPaths
from orchestrator.model.records import Job, Run
from orchestrator.model.settings import Settings, get_settings
from orchestrator.model.spec import spec_for_store, validate_spec
from orchestrator.model.states import JobState, RunState
from orchestrator.store.jobs import JobStore
from orchestrator.worker import names

TERMINABLE = tuple(TERMINABLE_JOBS)
ALLOWED_PAUSE = (RunState.RUNNING, RunState.FROZEN)
LIVE_EDIT_TIMEOUT = 60.0  # seconds a live edit waits for a worker to apply it
BACKENDS = ("local", "ssh", "slurm")


@dataclass(frozen=True)
class Rendered:
    """What `render` wrote: the run folder, its files (relative), the wrapper's path and the solver log's name."""

    root: Path
    files: list[str]
    wrapper: str
    log_file: str


@dataclass(frozen=True)
class HostKeyOffer:
    """The host key a node presents, and what the engine's known_hosts says of it."""

    node: str
    entry: str             # the known_hosts entry name ([address]:port)
    key: Any               # the presented key (a paramiko PKey), for trust_host_key
    type: str
    fingerprint: str
    known_hosts: Path
    trusted: bool          # already trusted
    others: list[str]      # other keys trusted for the entry now ("type fingerprint")


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

    def _send(self, task: str, *args: Any, **options: Any) -> None:
        self.celery.send_task(task, args=list(args), **options)

    # -- submit
    def submit_file(self, path: str | Path) -> str:
        """Submit a plain spec file (no sweep)."""
        from orchestrator.model.spec import load_spec

        return self.submit(load_spec(path))

    def submit_data(self, data: dict[str, Any], base_dir: Path | None = None) -> str:
        """Submit a plain spec given as data (no sweep)."""
        return self.submit(validate_spec(data, base_dir=base_dir))

    def submit_document(self, data: Any, sweep: list[str] | tuple[str, ...] = (),
                        base_dir: Path | None = None, confine: bool = False) -> dict[str, Any]:
        """A spec sent as data (the API, the monitor's form), parsed once into one job or a sweep's members and
        submitted: {"id": ...} or {"sweep": ..., "jobs": [...]}. With confine, its input folders must be inside
        the caller's uploads (relative paths resolve against them)."""
        if confine:
            base_dir = uploads_root(self.settings.root, self.user)
        parsed = parse_submission(data, list(sweep), base_dir, "spec")
        specs = [m.spec for m in parsed.members] if isinstance(parsed, SweepPlan) else [parsed]
        if confine:
            for spec in specs:
                check_inside_uploads(spec, base_dir)
        if isinstance(parsed, SweepPlan):
            sweep_id, job_ids = self.submit_sweep(parsed)
            return {"sweep": sweep_id, "jobs": job_ids}
        return {"id": self.submit(parsed)}

    def submit(self, spec: Any, extra: dict[str, Any] | None = None) -> str:
        """Queue a validated spec; checks it fits the backend before anything is created."""
        backend = self._check_fits(spec)
        spec = resolve_for_submit(spec, self.store, self.user, self.address)  # desktop.access: default, my-ip
        job_id = self.store.create_job(name=spec.name, owner=self.user, spec=spec_for_store(spec),
                                       backend=backend, solver=spec.solver.name, extra=extra)
        self._send(names.PROVISION, job_id)
        return job_id

    def submit_sweep(self, plan: SweepPlan) -> tuple[str, list[str]]:
        """Queue every member of a sweep as its own job, in order, under one new sweep id; every member is
        checked against the backend before the first is created."""
        for member in plan.members:
            self._check_fits(member.spec)
            resolve_for_submit(member.spec, self.store, self.user, self.address)  # raises before any job exists
        sweep_id = new_sweep_id()
        job_ids = [self.submit(member.spec, extra={"sweep": sweep_id, "sweep_index": member.index,
                                                   "sweep_values": member.values})
                   for member in plan.members]
        return sweep_id, job_ids

    def _check_fits(self, spec: Any) -> str:
        """The backend's name, once the spec's node and core counts fit it; SpecError otherwise."""
        from orchestrator.cluster import get_backend

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

    # -- who may see what
    def visible(self, record: Job) -> bool:
        return self.admin or record.owner == self.user

    def resolve(self, job: str) -> str:
        """The full id of the one job (the caller's, when scoped) whose id starts with `job`."""
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
            "allowed": [c.value for c in allowed_commands(record.state, current and current.state)],
            "deadlines": deadlines(record, current)})

    def _masked_spec(self, record: Job) -> dict[str, Any]:
        """The spec as users see it: licence keys and other secrets masked."""
        try:
            return validate_spec(record.spec, check_paths=False).model_dump(mode="json")
        except SpecError:
            return {"name": record.spec.get("name"), "solver": {"name": record.solver}}

    def jobs(self, limit: int = 100, owner: str | None = None) -> list[Job]:
        """The newest jobs the caller may see (only `owner`'s when given; a scoped non-admin: only theirs)."""
        if not self.admin:
            owner = self.user
        return self.store.list_jobs(limit, owner=owner)

    def overview(self, limit: int = 100, owner: str | None = None) -> list[JobSummary]:
        """The newest jobs, each with its current run's id, state and progress (`run`)."""
        rows = []
        for record in self.jobs(limit, owner):
            try:
                run = self.store.get_run(record.id, record.current_run)
                brief = RunBrief(id=run.id, state=run.state, progress=run.progress)
            except NotFound:
                brief = RunBrief(id=record.current_run)
            rows.append(JobSummary.model_validate({**record.model_dump(), "run": brief}))
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

    def wait(self, job: str, predicate: Callable[[JobStatus], bool], timeout: float = 600,
             poll: float = 0.2) -> JobStatus:
        """Poll the job document until predicate(doc) holds; TimeoutError otherwise."""
        return wait_until(self.status, job, predicate, timeout, poll)

    # -- control commands
    def _current(self, job: str) -> tuple[Job, Run]:
        record = self.job(job)
        return record, self.store.get_run(record.id, record.current_run)

    def _audit(self, job_id: str, action: str, **data: Any) -> str:
        return self.store.append_event(job_id, EventKind.CONTROL, {"action": action, "by": self.user, **data})

    def _race(self, job_id: str, command: Command) -> InvalidState:
        record, run = self._current(job_id)
        check_allowed(command, record, run)  # raises with the state that won the race
        return InvalidState(f"cannot {command.value}: job {job_id} changed meanwhile; try again")

    def terminate(self, job: str) -> Job:
        """Stop the solver, collect results, release the nodes. Idempotent: a second call changes nothing.
        The job's record (not its status document: the command is in flight)."""
        job_id = self.resolve(job)
        record = self.store.get_job(job_id)
        if record.state in (JobState.TERMINATING, JobState.TERMINATED):
            return record
        if record.state not in TERMINABLE:
            check_allowed(Command.TERMINATE, record, None)
        if self.store.transition_job(job_id, JobState.TERMINATING, expect=TERMINABLE,
                                     terminate_requested_at=time.time()):
            self._audit(job_id, "terminate")
        self._send(names.TERMINATE, job_id)
        return self.store.get_job(job_id)

    def terminate_sweep(self, sweep: str) -> tuple[str, list[Job]]:
        """Terminate every member job of a sweep (those already terminated stay as they are)."""
        sweep_id = resolve_sweep(self.store, sweep)
        return sweep_id, [self.terminate(job_id) for job_id in self.store.sweep_members(sweep_id)]

    def pause(self, job: str, freeze: bool = False) -> JobStatus:
        """Graceful: the solver writes a checkpoint and exits (run PAUSED; cluster stays up).
        freeze=True: every process of the run is suspended on every node (run FROZEN) until resume()."""
        record, run = self._current(job)
        job_id = record.id
        command = Command.FREEZE if freeze else Command.PAUSE
        check_allowed(command, record, run)
        if freeze:
            ok = self.store.transition_run(job_id, run.id, RunState.FROZEN, expect=[RunState.RUNNING],
                                           data={"by": self.user}, frozen_at=time.time())
        else:
            ok = self.store.transition_run(job_id, run.id, RunState.STOPPING, expect=ALLOWED_PAUSE,
                                           data={"intent": "pause", "by": self.user}, stop_intent="pause",
                                           stop_requested_at=time.time())
        if not ok:
            raise self._race(job_id, command)
        self._audit(job_id, command.value, run=run.id)
        self._send(names.SIGNALS, job_id, run.id)
        return self.status(job_id)

    def resume(self, job: str) -> JobStatus:
        """Continue a frozen run where it stood."""
        record, run = self._current(job)
        check_allowed(Command.RESUME, record, run)
        if not self.store.transition_run(record.id, run.id, RunState.RUNNING, expect=[RunState.FROZEN],
                                         data={"by": self.user}, frozen_at=None):
            raise self._race(record.id, Command.RESUME)
        self._audit(record.id, "resume", run=run.id)
        self._send(names.SIGNALS, record.id, run.id)
        return self.status(record.id)

    def restart(self, job: str) -> JobStatus:
        """Continue the current run from its latest checkpoint, with the edits so far, as its next attempt."""
        record, run = self._current(job)
        check_allowed(Command.RESTART, record, run)
        started = next_attempt(self.store, self.settings.root, record, run, by=self.user)
        if started is None:
            raise self._race(record.id, Command.RESTART)
        self._audit(record.id, "restart", run=run.id, **started)
        self._send(names.LAUNCH, record.id, run.id)
        return self.status(record.id)

    def rerun(self, job: str) -> JobStatus:
        """A new run (run-00N) from the original inputs plus the edits so far; earlier runs are kept."""
        record, run = self._current(job)
        check_allowed(Command.RERUN, record, run)
        run_id = self.store.add_run(record.id, after=run.id, revision=record.revision or 1, mode="fresh")
        if run_id is None:
            raise self._race(record.id, Command.RERUN)
        self._audit(record.id, "rerun", run=run_id, after=run.id)
        self._send(names.LAUNCH, record.id, run_id)
        return self.status(record.id)

    # -- edits
    def edit(self, job: str, sets: list[str] | tuple[str, ...] = (), files: dict[str, str] | None = None,
             live: bool = False, message: str = "") -> dict[str, Any]:
        """Record a new spec revision (and replaced input files, LOCAL path -> RELPATH) after validating it
        whole, as a submitted spec is; with live=True, a worker also applies it to the running solver first.
        Invalid edits raise SpecError and change nothing."""
        record, run = self._current(job)
        job_id = record.id
        command = Command.EDIT_LIVE if live else Command.EDIT
        check_allowed(command, record, run)
        assignments = parse_assignments(list(sets))
        checked_files = check_files(files or {})
        if not assignments and not checked_files:
            raise UserError("nothing to edit: give --set key=value and/or --file LOCAL=RELPATH")
        for _ in range(5):  # optimistic: retry if another edit lands in between
            old_spec = validate_spec(record.spec, check_paths=False, source=f"job {job_id} spec")
            new_spec = validate_spec(apply_assignments(record.spec, assignments), source="edit")
            changes = diff(old_spec.model_dump(mode="json"), new_spec.model_dump(mode="json"))
            if not changes and not checked_files:
                raise UserError("the edit changes nothing")
            revision_now = record.revision or 1
            entry: dict[str, Any] = {"by": self.user, "changes": changes,
                                     "files": sorted(map(str, checked_files)), "live": live, "run": run.id,
                                     "message": message}
            if live:
                texts = {str(rel): src.read_text() for rel, src in checked_files.items()}
                entry["applied_live"] = self._apply_live(job_id, run.id, record.spec,
                                                         apply_assignments(record.spec, assignments), texts)
            if checked_files:
                save_files(JobPaths.for_job(self.settings.root, job_id), revision_now + 1, checked_files)
            revision = self.store.add_revision(job_id, revision_now, spec_for_store(new_spec), entry)
            if revision is not None:
                return {**entry, "revision": revision}
            record, run = self._current(job)
            check_allowed(command, record, run)
        raise InvalidState(f"cannot edit job {job_id}: other edits keep landing; try again")

    def _apply_live(self, job_id: str, run_id: str, old_spec: dict[str, Any], new_spec: dict[str, Any],
                    files: dict[str, str], timeout: float | None = None) -> list[str]:
        """Have a worker apply the edit to the running solver; what it applied, from its report on the job's
        stream. Its refusal is raised here as the error it was (a SpecError naming the field, ...)."""
        timeout = LIVE_EDIT_TIMEOUT if timeout is None else timeout
        request = secrets.token_hex(6)
        after = self._audit(job_id, "edit-live", run=run_id, request=request)
        deadline = time.time() + timeout
        self._send(names.APPLY_LIVE, job_id, run_id, request, old_spec, new_spec, files, self.user, deadline,
                   expires=timeout)
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            for event in self.store.events(job_id, after, block_ms=500):
                after = event.id
                data = event.data
                if event.kind is not EventKind.CONTROL or data.get("request") != request:
                    continue
                if data.get("action") == APPLIED:
                    return list(data.get("applied") or [])
                if data.get("action") == FAILED:
                    raise _rebuilt(data.get("error") or {})
        raise InfrastructureError(f"the live edit was not applied within {timeout:.0f}s: no engine worker took "
                                  "it (is the engine up? `e2e up`); nothing was changed or recorded")

    # -- sweeps
    def sweeps(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest sweeps with how their members stand."""
        found = []
        for sweep_id in self.store.sweeps(limit):
            rows = member_rows(self.store, sweep_id)
            first = self.store.get_job(rows[0]["id"]) if rows else None
            found.append({"sweep": sweep_id, "name": first.name.rsplit("-", 1)[0] if first else "",
                          "members": len(rows), "summary": summary(rows),
                          "created_at": first.created_at if first else None})
        return found

    def sweep_status(self, sweep: str) -> tuple[str, list[dict[str, Any]]]:
        """A sweep's full id and one row per member."""
        sweep_id = resolve_sweep(self.store, sweep)
        return sweep_id, member_rows(self.store, sweep_id)

    # -- nodes
    def _backend(self, name: str | None) -> Any:
        from orchestrator.cluster import get_backend

        if name not in (None, *BACKENDS):
            raise UserError(f"backend {name!r}: choose local, ssh or slurm")
        return get_backend(name or ("ssh" if self.settings.inventory else "local"), self.settings)

    def nodes(self, backend: str | None = None) -> list[dict[str, Any]]:
        """Every node: free, leased (to which job) or drained; its load; whether it answers. A scoped
        non-admin sees others' job ids and drain notes only as that."""
        from orchestrator.engine.nodes_admin import node_rows

        chosen = self._backend(backend)
        rows = node_rows(chosen, self.store.leases(chosen.name), self.store.drained(chosen.name))
        if not self.admin:
            mine = {r.id for r in self.jobs(1000)}
            for row in rows:
                if row["job"] and row["job"] not in mine:
                    row["job"] = "(another user's)"
                if row["drained"]:
                    row["drained"] = {"reason": row["drained"].get("reason")}
        return rows

    def drain(self, node: str, reason: str = "", backend: str | None = None) -> dict[str, Any]:
        """Take a node out of service: no new job gets it (a job holding it keeps it until the job ends)."""
        from orchestrator.engine.nodes_admin import drain

        return drain(self.store, self._backend(backend), node, self.user, reason)

    def undrain(self, node: str, force: bool = False, backend: str | None = None) -> tuple[int, str | None]:
        """Put a drained node back into service once it answers; leftover processes of the run that lost it
        are killed first. (killed, warning)."""
        from orchestrator.engine.nodes_admin import undrain

        return undrain(self.store, self._backend(backend), node, force)

    def host_key(self, node: str) -> HostKeyOffer:
        """The host key an inventory node presents now, and whether the engine trusts it already."""
        from orchestrator.cluster.hostkeys import fingerprint, host_entry, trusted_keys
        from orchestrator.cluster.ssh import SSHBackend
        from orchestrator.cluster.sshconn import fetch_host_key
        from orchestrator.model.errors import BackendError

        backend = SSHBackend(self.settings)
        try:
            spec = backend.spec(node)
        except BackendError:
            raise UserError(f"node {node!r} is not in the inventory; known nodes: "
                            f"{', '.join(n.name for n in backend.config.nodes)}") from None
        known_hosts = backend.config.known_hosts
        key = fetch_host_key(spec, backend.config.connect_timeout)
        current = trusted_keys(known_hosts, spec.address, spec.port)
        return HostKeyOffer(node=spec.name, entry=host_entry(spec.address, spec.port), key=key,
                            type=key.get_name(), fingerprint=fingerprint(key), known_hosts=known_hosts,
                            trusted=current.get(key.get_name()) == key,
                            others=[f"{t} {fingerprint(k)}" for t, k in current.items()])

    def trust_host_key(self, offer: HostKeyOffer, replace: bool = False) -> None:
        """Add the offered key to the engine's managed known_hosts (replacing a different one with replace)."""
        from orchestrator.cluster.hostkeys import trust
        from orchestrator.cluster.ssh import SSHBackend

        spec = SSHBackend(self.settings).spec(offer.node)
        trust(offer.known_hosts, spec.address, spec.port, offer.key, replace=replace)

    # -- render
    def render(self, spec_path: Path, out_dir: Path, hosts: str | None = None) -> Rendered:
        """Dry run: write every file a run would get (inputs, hostfile, run.sh, wrapper.sh); start nothing."""
        from orchestrator.cluster.base import Node
        from orchestrator.engine.materialize import materialize_run
        from orchestrator.model.paths import RunPaths
        from orchestrator.model.spec import load_spec
        from solvers.base import registry

        parsed = load_spec(spec_path)
        if hosts is not None:
            names_ = [h.strip() for h in hosts.split(",")]
            if not all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}", h) for h in names_):
                raise UserError(f"--hosts {hosts!r}: give host names separated by commas, e.g. node1,node2,node3")
            nodes = [Node(h, h, parsed.cluster.cores_per_node, out_dir.resolve()) for h in names_]
        else:
            nodes = self._backend(parsed.cluster.backend).inventory()[: parsed.cluster.nodes]
        paths = RunPaths(out_dir.resolve())
        prepared = materialize_run(parsed, registry().get(parsed.solver.name), "dry-run", "run-001", nodes, paths)
        files = [str(p.relative_to(paths.root))
                 for p in sorted(p for p in paths.root.rglob("*") if p.is_file() and ".e2e" not in p.parts)]
        return Rendered(paths.root, files, str(paths.relative(paths.wrapper)), prepared.log_file)

    # -- files
    def file_store(self, job: str) -> tuple[str, Any, dict[str, Any]]:
        """(job id, where its files are read from, their manifest): the live work folder while the job is up,
        its stored results (with sha256) after."""
        from orchestrator.sync.results import files_of

        record = self.job(job)
        store = files_of(self.settings.root, record)
        return record.id, store, store.manifest(record.id) or {"files": [], "links": [], "bytes": 0}

    def files(self, job: str) -> dict[str, Any]:
        job_id, store, manifest = self.file_store(job)
        return {"job": job_id, "location": store.location(job_id), **manifest}

    def download(self, job: str, path: str | None, to: Path) -> tuple[str, list[str]]:
        """Copy the job's stored files under `path` (all when None) into `to`, checked against their sha256."""
        from orchestrator.sync.results import download

        job_id, store, _ = self.file_store(job)
        to.mkdir(parents=True, exist_ok=True)
        return job_id, download(store, job_id, path, to.resolve())

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

    # -- desktop access rules
    def my_address(self) -> str | None:
        """The address the engine sees the caller at ('my-ip'): the API's client's, or this process's as Redis
        sees it (the CLI on the engine's machine)."""
        return self.address if self.scoped else client_address(self.store)

    def access_rules(self) -> dict[str, Any]:
        """The caller's default rules (None: the built-in everywhere) and their address now."""
        rules = user_rules(self.store, self.user)
        return {"rules": rules, "shown": rules or [EVERYWHERE], "default": rules is None, "my_ip": self.my_address()}

    def set_access_rules(self, rules: list[str] | None) -> list[str] | None:
        """Set (None: clear) the caller's default rules; my-ip is fixed to their address now."""
        if rules is not None:
            try:
                rules = normalise_rules(rules)
            except ValueError as exc:
                raise UserError(f"access: {exc}") from None
            rules = resolve_rules(rules, self.my_address() if MY_IP in rules else None)
        set_user_rules(self.store, self.user, rules)
        return rules

    # -- desktops
    def desktop_session(self, job: str, wait: float = 0) -> Any:
        """The job's ready desktop (desktop.connect.Desktop, holding its secret), waiting up to `wait`."""
        from orchestrator.desktop import connect

        return connect.desktop(self, job, wait=wait)

    def check_desktop_access(self, session: Any, entry: str, address: str | None = None) -> str:
        """Refuse (and record on the job) a caller whose address is outside the desktop's rules; the address."""
        from orchestrator.desktop.access import allowed

        address = address or self.my_address()
        if address is None or not allowed(address, session.record.get("access") or []):
            self.store.append_event(session.job_id, EventKind.ACCESS_REFUSED, {
                "entry": entry, "address": address, "reason": "outside the allowed networks", "user": self.user})
            raise DesktopRefused(address, session.record.get("access") or [], hint=not self.scoped)
        return address

    def desktop(self, job: str, wait: float = 0) -> dict[str, Any]:
        """The desktop's URL (with its token and password), VNC port and SSH tunnel, for the caller's address."""
        d = self.desktop_session(job, wait)
        self.check_desktop_access(d, "api desktop" if self.scoped else "desktop url")
        user, host, port = d.ssh
        return {"id": d.job_id, "state": d.record.get("state"), "url": d.url, "vnc_port": d.vnc_port,
                "password": d.secret.password, "ssh": {"user": user, "host": host, "port": port},
                "tunnel": d.tunnel_instructions(5901)}

    def set_desktop_password(self, job: str, password: str, view_password: str | None = None) -> int:
        from orchestrator.desktop import connect

        return connect.set_password(self, job, password, view_password)

    def head_is_local(self, session: Any) -> bool:
        """The desktop's head node is this machine (a native viewer connects to it directly)."""
        from orchestrator.cluster.base import Node
        from orchestrator.desktop.nodes import is_loopback

        _, host, _ = session.ssh
        return is_loopback(Node("head", host, 1, Path("/")))

    def open_desktop_tunnel(self, session: Any, local_port: int, identity: str | None = None) -> Any:
        """An SSH tunnel from 127.0.0.1:local_port to the desktop's VNC port (a started Forwarder: wait(),
        close()); the host keys the engine trusts for its nodes count too. The caller's own connection."""
        from orchestrator.cluster.tunnel import Forwarder, engine_known_hosts
        from orchestrator.desktop.connect import open_tunnel

        ssh = open_tunnel(self, session, key_filename=identity,
                          known_hosts=engine_known_hosts(self.settings.inventory))
        try:
            return Forwarder(ssh, local_port, session.vnc_port, owns_client=True).start()
        except OSError as exc:
            ssh.close()
            raise UserError(f"cannot listen on 127.0.0.1:{local_port}: {exc.strerror or exc}; choose a port with "
                            "--local-port") from None

    # -- usage and engine metrics
    def usage(self, owner: str | None = None, limit: int = 1000, since: float | None = None,
              until: float | None = None) -> dict[str, Any]:
        """Core-hours per job and per user (the caller's own unless admin), desktop hours shown apart."""
        from orchestrator.engine.usage import usage

        if not self.admin:
            owner = self.user
        return usage(self.store, owner, limit, since, until)


class DesktopRefused(UserError):
    """The caller's address is outside the desktop's allowed networks (the API answers 403)."""

    def __init__(self, address: str | None, access: list[str], hint: bool = True) -> None:
        self.address, self.access = address, access
        super().__init__(f"your address {address or '(unknown)'} is outside the desktop's allowed networks "
                         f"({', '.join(access)})" + ("; change desktop.access or `e2e access`" if hint else ""))


def _rebuilt(error: dict[str, Any]) -> errors.E2EError:
    """The error a worker reported, as its own type again."""
    message = error.get("message") or "the live edit failed"
    if error.get("type") == "SpecError":
        exc = SpecError([tuple(p) for p in error.get("problems") or []])
        exc.message, exc.args = message, (message,)
        return exc
    kind = getattr(errors, str(error.get("type")), None)
    if isinstance(kind, type) and issubclass(kind, errors.E2EError) and kind is not SpecError:
        return kind(message)
    return InfrastructureError(message)
