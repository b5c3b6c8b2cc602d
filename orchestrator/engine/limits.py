"""Guards that end a job without a user's terminate: walltime and idle shutdown, each warned first."""

from __future__ import annotations

import time

from orchestrator.model.events import EventKind
from orchestrator.model.records import Job, Run
from orchestrator.model.states import RUN_ENDED, JobState
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


def check_limits(store: JobStore, job: Job, run: Run | None) -> str | None:
    """Warn once before a limit, and start termination when it is reached; the limit that struck."""
    now = time.time()
    limits = (job.spec or {}).get("limits") or {}
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
