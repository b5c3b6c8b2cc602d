"""Control latency: from a user's command (its control event) to the engine applying it (the state event that
shows it done), folded from job event streams into a cumulative histogram kept by the store (`store.metrics`).

Whoever folds (the /metrics scrape) reads each active job's events after a per-job cursor, matches every
pause, restart, rerun and terminate with the event that completes it, and adds the delays to the histogram.
Freeze and resume are left out: their state changes at once, and the signal delivery records no event.
"""

from __future__ import annotations

from typing import Any

from orchestrator.model.commands import Command
from orchestrator.model.events import Event, EventKind
from orchestrator.model.states import RUN_ENDED, JobState, RunState

BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# the commands timed, as the strings their control events and the histogram's keys carry
ACTIONS = tuple(c.value for c in (Command.PAUSE, Command.RESTART, Command.RERUN, Command.TERMINATE))
PENDING_MAX_AGE = 3600.0  # a command not applied within the hour is forgotten (it never will be)
LOCK_SECONDS = 30


def applies(action: str, run: str | None, event: Event) -> bool:
    """Does `event` show the command `action` (on `run`) done?"""
    state = event.data.get("state")
    if action == Command.TERMINATE:
        return event.kind is EventKind.JOB_STATE and state == JobState.TERMINATED
    if event.kind is not EventKind.RUN_STATE or event.data.get("run") != run:
        return False
    return state in RUN_ENDED if action == Command.PAUSE else state == RunState.RUNNING


def step(events: list[Event], pending: list[list[Any]]) -> tuple[list[tuple[str, float]], list[list[Any]]]:
    """Match commands with what applied them: the (action, seconds) observed, and the still pending."""
    observed = []
    for event in events:
        if event.kind is EventKind.CONTROL and event.data.get("action") in ACTIONS:
            pending.append([event.data["action"], event.data.get("run"), event.ts])
            continue
        still = []
        for action, run, ts in pending:
            if applies(action, run, event):
                observed.append((action, max(0.0, event.ts - ts)))
            else:
                still.append([action, run, ts])
        pending = still
    return observed, pending


def fold(store: Any) -> int:
    """Fold the new events of active jobs (and of jobs that were active at the last fold) into the histogram;
    how many latencies were added. Skips (0) while another process folds."""
    metrics = store.metrics
    if not metrics.try_fold_lock(LOCK_SECONDS):
        return 0
    added = 0
    try:
        cursors = metrics.control_cursors()
        active = set(store.active_jobs())
        for job_id in sorted(active | set(cursors)):
            saved = cursors.get(job_id) or {"after": "0-0", "pending": []}
            events = store.events(job_id, saved["after"], count=10_000)
            observed, pending = step(events, saved["pending"])
            newest = events[-1].ts if events else None
            pending = [p for p in pending if newest is None or newest - p[2] < PENDING_MAX_AGE]
            cursor = None  # terminated and fully read: forgotten
            if job_id in active or pending and events:
                cursor = {"after": events[-1].id if events else saved["after"], "pending": pending}
            metrics.record_control(job_id, observed, BUCKETS, cursor)
            added += len(observed)
    finally:
        metrics.release_fold_lock()
    return added


def histogram(store: Any) -> dict[str, dict[str, Any]]:
    """action -> {buckets: [(bound, cumulative count)], count, sum}."""
    return store.metrics.control_histogram(ACTIONS, BUCKETS)
