"""A run's next attempt: the one transition that continues a run from its latest checkpoint (restart)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.model.errors import InvalidState
from orchestrator.model.paths import JobPaths
from orchestrator.model.records import Attempt, Job, Run
from orchestrator.model.states import RunState
from orchestrator.store.jobs import JobStore
from solvers.base import RunMode, registry

# What the previous attempt left on the run record that must not leak into the next one.
ATTEMPT_FIELDS = ("pid", "exit_code", "reason", "stop_intent", "stop_requested_at", "stop_sent_at", "term_sent_at",
                  "kill_sent_at", "signals", "frozen_at", "ended_at", "launch_requested_at", "failed_nodes",
                  "recovery", "started_at", "stop_reason", "progress_at",
                  "resumed_at")


def checkpoint_of(root: Path, job: Job, run: Run) -> str:
    """The latest checkpoint of the run, as its plugin names it; InvalidState when there is none."""
    run_dir = JobPaths.for_job(root, job.id).run(run.id).root
    checkpoint = registry().get(job.solver).latest_checkpoint(run_dir)
    if checkpoint is None:
        raise InvalidState(f"cannot restart: {run.id} has no checkpoint to continue from; "
                           "`e2e rerun` starts a new run from the inputs")
    return checkpoint


def next_attempt(store: JobStore, root: Path, job: Job, run: Run,
                 **event: Any) -> dict[str, Any] | None:
    """Move the ended run back to PENDING as its next attempt (mode restart, the job's current revision),
    if it is still in the state it was read in; {attempt, checkpoint}, or None when someone moved it first.
    The caller then launches it. `event` goes into the run's state event (who, why)."""
    checkpoint = checkpoint_of(root, job, run)
    attempt = run.attempt + 1
    # the ended attempt's interval stays on the run (usage accounting charges every attempt)
    past = [*run.past_attempts, Attempt(attempt=run.attempt, started_at=run.started_at,
                                        ended_at=run.ended_at or run.updated_at)]
    if not store.transition_run(job.id, run.id, RunState.PENDING, expect=[run.state],
                                data={"attempt": attempt, "from": checkpoint, **event},
                                attempt=attempt, mode=RunMode.RESTART, revision=job.revision or 1,
                                past_attempts=past, rules_fired=[], rules_warned=[],  # a restart re-arms the rules
                                **dict.fromkeys(ATTEMPT_FIELDS)):
        return None
    return {"attempt": attempt, "checkpoint": checkpoint}
