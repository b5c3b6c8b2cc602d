"""Control latency: from a user's command (its control event) to the engine applying it (the state event that
shows it done), folded from job event streams into a cumulative histogram kept in Redis.

Whoever folds (the /metrics scrape) reads each active job's events after a per-job cursor, matches every
pause, restart, rerun and terminate with the event that completes it, and adds the delays to the histogram.
Freeze and resume are left out: their state changes at once, and the signal delivery records no event.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.model.commands import Command
from orchestrator.model.events import Event, EventKind
from orchestrator.model.states import RUN_ENDED, JobState, RunState

BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# the commands timed, as the strings their control events and the histogram's keys carry
ACTIONS = tuple(c.value for c in (Command.PAUSE, Command.RESTART, Command.RERUN, Command.TERMINATE))
PENDING_MAX_AGE = 3600.0  # a command not applied within the hour is forgotten (it never will be)
LOCK_SECONDS = 30


def _keys(prefix: str) -> tuple[str, str, str]:
    return f"{prefix}:metrics:control-cursor", f"{prefix}:metrics:control-latency", f"{prefix}:metrics:fold-lock"


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
    cursor_key, hist_key, lock_key = _keys(store.prefix)
    r = store.r
    if not r.set(lock_key, "1", nx=True, ex=LOCK_SECONDS):
        return 0
    added = 0
    try:
        cursors = r.hgetall(cursor_key)
        active = set(store.active_jobs())
        for job_id in sorted(active | set(cursors)):
            saved = json.loads(cursors.get(job_id) or '{"after": "0-0", "pending": []}')
            events = store.events(job_id, saved["after"], count=10_000)
            observed, pending = step(events, saved["pending"])
            pipe = r.pipeline(transaction=False)
            for action, seconds in observed:
                for bound in BUCKETS:
                    if seconds <= bound:
                        pipe.hincrby(hist_key, f"{action}:le:{bound}", 1)
                pipe.hincrby(hist_key, f"{action}:count", 1)
                pipe.hincrbyfloat(hist_key, f"{action}:sum", seconds)
            newest = events[-1].ts if events else None
            pending = [p for p in pending if newest is None or newest - p[2] < PENDING_MAX_AGE]
            if job_id in active or pending and events:
                after = events[-1].id if events else saved["after"]
                pipe.hset(cursor_key, job_id, json.dumps({"after": after, "pending": pending}))
            else:
                pipe.hdel(cursor_key, job_id)  # terminated and fully read
            pipe.execute()
            added += len(observed)
    finally:
        r.delete(lock_key)
    return added


def histogram(store: Any) -> dict[str, dict[str, Any]]:
    """action -> {buckets: [(bound, cumulative count)], count, sum}."""
    raw = store.r.hgetall(_keys(store.prefix)[1])
    out = {}
    for action in ACTIONS:
        count = int(raw.get(f"{action}:count", 0))
        out[action] = {"buckets": [(b, int(raw.get(f"{action}:le:{b}", 0))) for b in BUCKETS],
                       "count": count, "sum": float(raw.get(f"{action}:sum", 0.0))}
    return out
