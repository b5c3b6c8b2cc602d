"""Guards that end a job without a user's terminate: walltime and idle shutdown, each warned first, and a batch
job's end with its run (limits.terminate_on_end)."""

from __future__ import annotations

import time

from orchestrator.engine.node_health import wants_recovery
from orchestrator.model.events import EventKind
from orchestrator.model.records import Job, Run
from orchestrator.model.states import RUN_ENDED, JobState, RunState
from orchestrator.store.jobs import JobStore

WARN_FRACTION = 0.1       # warn this share of the limit before it strikes ...
WARN_MAX = 300.0          # ... but never more than 5 minutes before


def deadlines(job: Job, run: Run | None) -> dict[str, float]:
    """When each configured limit ends the job (epoch seconds); empty when no limit applies yet."""
    limits = (job.spec or {}).get("limits") or {}
    up_at = job.up_at
    found: dict[str, float] = {}
    if up_at is None:
        return found
    if limits.get("walltime"):
        found["walltime"] = up_at + float(limits["walltime"])
    if limits.get("idle_shutdown") and run is not None and run.state in RUN_ENDED:
        activity = job.desktop_activity_at or 0.0
        idle_since = max(up_at, run.ended_at or up_at, activity)
        found["idle_shutdown"] = idle_since + float(limits["idle_shutdown"])
    return found


def next_limit_moment(job: Job, run: Run | None) -> float | None:
    """The next moment a limit warns or strikes (epoch seconds), None when none is configured."""
    limits = (job.spec or {}).get("limits") or {}
    moments = []
    for name, deadline in deadlines(job, run).items():
        warn_at = deadline - min(WARN_MAX, WARN_FRACTION * float(limits[name]))
        moments.append(warn_at if time.time() < warn_at else deadline)
    return min(moments) if moments else None


# The run ends for good: a paused run waits for its user's restart, and a run a node fault failed may be
# restarted on a replacement node (restart_on_node_failure) before the job is let go.
RUN_OVER = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.STOPPED})


def run_is_over(job: Job, run: Run | None) -> bool:
    """limits.terminate_on_end and the job's run has ended with nothing left to do for it."""
    limits = (job.spec or {}).get("limits") or {}
    return bool(limits.get("terminate_on_end")) and run is not None and run.state in RUN_OVER \
        and not wants_recovery(job, run)


def check_limits(store: JobStore, job: Job, run: Run | None) -> str | None:
    """Warn once before a limit, and start termination when it is reached; the limit that struck."""
    now = time.time()
    limits = (job.spec or {}).get("limits") or {}
    if run_is_over(job, run):
        reason = f"{run.id} {run.state.value.lower()}; the job ends with its run (limits.terminate_on_end)"
        if store.transition_job(job.id, JobState.TERMINATING, expect=[JobState.UP], data={"reason": reason},
                                terminate_requested_at=now, terminated_by="terminate_on_end"):
            store.append_event(job.id, EventKind.CONTROL, {"action": "terminate", "by": "terminate_on_end",
                                                           "reason": reason})
        return "terminate_on_end"
    for name, deadline in deadlines(job, run).items():
        total = float(limits[name])
        warn_at = deadline - min(WARN_MAX, WARN_FRACTION * total)
        if now >= deadline:
            reason = f"{name} of {total:g}s reached"
            if store.transition_job(job.id, JobState.TERMINATING, expect=[JobState.UP],
                                    data={"reason": reason}, terminate_requested_at=now, terminated_by=name):
                store.append_event(job.id, EventKind.CONTROL, {"action": "terminate", "by": name,
                                                               "reason": reason})
            return name
        warned = getattr(job, f"{name}_warned_at")  # walltime_warned_at, idle_shutdown_warned_at
        if now >= warn_at and (warned is None or warned < warn_at - 1):
            store.update_job(job.id, **{f"{name}_warned_at": now})
            store.append_event(job.id, EventKind.WARNING, {
                "limit": name, "message": f"{name} ends this job in {deadline - now:.0f}s unless it is raised "
                                          f"(e2e edit JOB --set limits.{name}=...)"})
    return None
