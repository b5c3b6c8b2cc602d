"""Steering a job: the control commands (pause, freeze, resume, restart, rerun, terminate) and spec edits, the
live ones applied by a worker while the caller waits for its report.

Each command checks it is allowed in the state it finds, moves the state with an expected-state guard (so a
concurrent change is reported, never overwritten), records who asked on the job's stream, and sends the worker
task that has the effect on the nodes."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

from orchestrator.control.protocol import JobStatus
from orchestrator.control.submission import checked_spec
from orchestrator.control.sweeps import resolve_sweep
from orchestrator.engine.attempts import next_attempt
from orchestrator.engine.edits import apply_assignments, check_files, diff, parse_assignments, save_files
from orchestrator.engine.live_edit import APPLIED, FAILED
from orchestrator.model import errors
from orchestrator.model.commands import TERMINABLE_JOBS, Command, check_allowed
from orchestrator.model.errors import InfrastructureError, InvalidState, SpecError, UserError
from orchestrator.model.events import EventKind
from orchestrator.model.paths import JobPaths
from orchestrator.model.records import Job, Run
from orchestrator.model.spec import spec_for_store, validate_spec
from orchestrator.model.states import JobState, RunState
from orchestrator.worker import names

if TYPE_CHECKING:
    from orchestrator.control.service import ControlService

TERMINABLE = tuple(TERMINABLE_JOBS)
ALLOWED_PAUSE = (RunState.RUNNING, RunState.FROZEN)
LIVE_EDIT_TIMEOUT = 60.0  # seconds a live edit waits for a worker to apply it
EDIT_RETRIES = 5          # an edit is optimistic: it is redone this often when another lands in between


def _current(service: ControlService, job: str) -> tuple[Job, Run]:
    record = service.job(job)
    return record, service.store.get_run(record.id, record.current_run)


def _audit(service: ControlService, job_id: str, action: str, **data: Any) -> str:
    """Record who asked for what on the job's stream; the event's id."""
    return service.store.append_event(job_id, EventKind.CONTROL, {"action": action, "by": service.user, **data})


def _race(service: ControlService, job_id: str, command: Command) -> InvalidState:
    """The error for a guarded transition that lost: the state that won it, when it forbids the command."""
    record, run = _current(service, job_id)
    check_allowed(command, record, run)  # raises with the state that won the race
    return InvalidState(f"cannot {command.value}: job {job_id} changed meanwhile; try again")


# -- control commands

def terminate(service: ControlService, job: str) -> Job:
    job_id = service.resolve(job)
    store = service.store
    record = store.get_job(job_id)
    if record.state in (JobState.TERMINATING, JobState.TERMINATED):
        return record
    if record.state not in TERMINABLE:
        check_allowed(Command.TERMINATE, record, None)
    if store.transition_job(job_id, JobState.TERMINATING, expect=TERMINABLE, terminate_requested_at=time.time()):
        _audit(service, job_id, "terminate")
    service.send(names.TERMINATE, job_id)
    return store.get_job(job_id)


def terminate_sweep(service: ControlService, sweep: str) -> tuple[str, list[Job]]:
    sweep_id = resolve_sweep(service.store, sweep)
    return sweep_id, [terminate(service, job_id) for job_id in service.store.sweep_members(sweep_id)]


def pause(service: ControlService, job: str, freeze: bool = False) -> JobStatus:
    record, run = _current(service, job)
    job_id = record.id
    command = Command.FREEZE if freeze else Command.PAUSE
    check_allowed(command, record, run)
    if freeze:
        ok = service.store.transition_run(job_id, run.id, RunState.FROZEN, expect=[RunState.RUNNING],
                                          data={"by": service.user}, frozen_at=time.time())
    else:
        ok = service.store.transition_run(job_id, run.id, RunState.STOPPING, expect=ALLOWED_PAUSE,
                                          data={"intent": "pause", "by": service.user}, stop_intent="pause",
                                          stop_requested_at=time.time())
    if not ok:
        raise _race(service, job_id, command)
    _audit(service, job_id, command.value, run=run.id)
    service.send(names.SIGNALS, job_id, run.id)
    return service.status(job_id)


def resume(service: ControlService, job: str) -> JobStatus:
    record, run = _current(service, job)
    check_allowed(Command.RESUME, record, run)
    if not service.store.transition_run(record.id, run.id, RunState.RUNNING, expect=[RunState.FROZEN],
                                        data={"by": service.user}, frozen_at=None, resumed_at=time.time()):
        raise _race(service, record.id, Command.RESUME)
    _audit(service, record.id, "resume", run=run.id)
    service.send(names.SIGNALS, record.id, run.id)
    return service.status(record.id)


def restart(service: ControlService, job: str) -> JobStatus:
    record, run = _current(service, job)
    check_allowed(Command.RESTART, record, run)
    started = next_attempt(service.store, service.settings.root, record, run, by=service.user)
    if started is None:
        raise _race(service, record.id, Command.RESTART)
    _audit(service, record.id, "restart", run=run.id, **started)
    service.send(names.LAUNCH, record.id, run.id)
    return service.status(record.id)


def rerun(service: ControlService, job: str) -> JobStatus:
    record, run = _current(service, job)
    check_allowed(Command.RERUN, record, run)
    run_id = service.store.add_run(record.id, after=run.id, revision=record.revision or 1, mode="fresh")
    if run_id is None:
        raise _race(service, record.id, Command.RERUN)
    _audit(service, record.id, "rerun", run=run_id, after=run.id)
    service.send(names.LAUNCH, record.id, run_id)
    return service.status(record.id)


# -- edits

def edit(service: ControlService, job: str, sets: list[str] | tuple[str, ...] = (),
         files: dict[str, str] | None = None, live: bool = False, message: str = "") -> dict[str, Any]:
    record, run = _current(service, job)
    job_id = record.id
    command = Command.EDIT_LIVE if live else Command.EDIT
    check_allowed(command, record, run)
    assignments = parse_assignments(list(sets))
    checked_files = check_files(files or {})
    if not assignments and not checked_files:
        raise UserError("nothing to edit: give --set key=value and/or --file LOCAL=RELPATH")
    for _ in range(EDIT_RETRIES):
        old_spec = validate_spec(record.spec, check_paths=False, source=f"job {job_id} spec")
        # checked exactly like a submit (the same function): paths must be in the owner's uploads (API callers)
        new_spec = checked_spec(service, apply_assignments(record.spec, assignments), confine=service.scoped,
                                owner=record.owner, source="edit")
        changes = diff(old_spec.model_dump(mode="json"), new_spec.model_dump(mode="json"))
        if not changes and not checked_files:
            raise UserError("the edit changes nothing")
        revision_now = record.revision or 1
        entry: dict[str, Any] = {"by": service.user, "changes": changes,
                                 "files": sorted(map(str, checked_files)), "live": live, "run": run.id,
                                 "message": message}
        if live:
            texts = {str(rel): src.read_text() for rel, src in checked_files.items()}
            entry["applied_live"] = apply_live(service, job_id, run.id, record.spec,
                                               apply_assignments(record.spec, assignments), texts)
        if checked_files:
            # an API user's files are the API's own temporary copies of the request's bodies
            save_files(JobPaths.for_job(service.settings.root, job_id), revision_now + 1, checked_files,
                       own_copies=service.scoped)
        revision = service.store.add_revision(job_id, revision_now, spec_for_store(new_spec), entry)
        if revision is not None:
            return {**entry, "revision": revision}
        record, run = _current(service, job)
        check_allowed(command, record, run)
    raise InvalidState(f"cannot edit job {job_id}: other edits keep landing; try again")


def apply_live(service: ControlService, job_id: str, run_id: str, old_spec: dict[str, Any],
               new_spec: dict[str, Any], files: dict[str, str], timeout: float | None = None) -> list[str]:
    """Have a worker apply the edit to the running solver; what it applied, from its report on the job's
    stream. Its refusal is raised here as the error it was (a SpecError naming the field, ...)."""
    timeout = LIVE_EDIT_TIMEOUT if timeout is None else timeout
    request = secrets.token_hex(6)
    after = _audit(service, job_id, "edit-live", run=run_id, request=request)
    # The task carries its deadline and expires with it: a worker that takes it late applies nothing, so an
    # edit this caller gave up on (and did not record) never lands on the solver afterwards.
    deadline = time.time() + timeout
    service.send(names.APPLY_LIVE, job_id, run_id, request, old_spec, new_spec, files, service.user, deadline,
                 expires=timeout)
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        for event in service.store.events(job_id, after, block_ms=500):
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
