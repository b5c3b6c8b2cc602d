"""Control commands as typed data: which command is allowed in which job and run state, in one table."""

from __future__ import annotations

from enum import Enum

from orchestrator.model.errors import InvalidState
from orchestrator.model.records import Job, Run
from orchestrator.model.states import JobState, RunState


class Command(str, Enum):
    """What a user (or a limit) can ask of a job."""

    PAUSE = "pause"          # checkpoint and stop the solver; the cluster stays up
    FREEZE = "freeze"        # suspend every process of the run on every node (pause --freeze)
    RESUME = "resume"        # continue a frozen run
    EDIT = "edit"            # a new spec revision and/or replaced input files
    EDIT_LIVE = "edit-live"  # an edit applied to the running solver (edit --live)
    RESTART = "restart"      # continue the current run from its latest checkpoint
    RERUN = "rerun"          # a new run from the original inputs plus edits
    TERMINATE = "terminate"  # stop everything, collect results, release the nodes


_ENDED = frozenset({RunState.PAUSED, RunState.COMPLETED, RunState.FAILED})

# For each command: the run states of the job's current run in which it is accepted (the job must be UP,
# except terminate, which has its own rule below).
ALLOWED: dict[Command, frozenset[RunState]] = {
    Command.PAUSE: frozenset({RunState.RUNNING, RunState.FROZEN}),
    Command.FREEZE: frozenset({RunState.RUNNING}),
    Command.RESUME: frozenset({RunState.FROZEN}),
    Command.EDIT: _ENDED | {RunState.PENDING},
    Command.EDIT_LIVE: frozenset({RunState.RUNNING}),
    Command.RESTART: _ENDED,
    Command.RERUN: _ENDED,
}
TERMINABLE_JOBS = frozenset({JobState.QUEUED, JobState.PROVISIONING, JobState.UP, JobState.FAILED})


def allowed_commands(job_state: JobState, run_state: RunState | None) -> list[Command]:
    """Every command the job accepts right now, in declaration order."""
    found = [c for c, states in ALLOWED.items() if job_state is JobState.UP and run_state in states]
    if job_state in TERMINABLE_JOBS:
        found.append(Command.TERMINATE)
    return found


def check_allowed(command: Command, job: Job, run: Run | None) -> None:
    """Refuse a command the current state does not allow, saying the state and what is allowed."""
    job_state, run_state = job.state, (run.state if run is not None else None)
    allowed = allowed_commands(job_state, run_state)
    if command in allowed:
        return
    where = f"job {job.id} is {job_state.value}"
    if run is not None and job_state is JobState.UP:
        where += f", its run {run.id} is {run.state.value}"
    options = ", ".join(c.value for c in allowed) or "none"
    raise InvalidState(f"cannot {command.value}: {where}; allowed now: {options}")
