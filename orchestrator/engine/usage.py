"""Usage accounting: core-hours charged per job and per user (solver time only), and desktop time shown apart.

A job is charged for each attempt of each run while its solver held the nodes: from the attempt's start
(the wrapper's started_at) to its end (ended_at), times the job's nodes times cores per node. Earlier
attempts of a restarted run are kept on the run record (`past_attempts`, written by attempts.next_attempt
when a restart begins); the current attempt is read from the run itself, and one still active counts up to
now. Desktop time (the cluster up with its desktop) is reported but never charged: visualization is free.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from orchestrator.model.records import Attempt, Job, Run
from orchestrator.model.states import JOB_TERMINAL, RUN_ENDED, RunState

NOT_STARTED = frozenset({RunState.PENDING, RunState.LAUNCHING})  # no interval yet for this attempt


def _shape(job: Job) -> tuple[int, int]:
    cluster = (job.spec or {}).get("cluster") or {}
    return int(cluster.get("nodes") or 1), int(cluster.get("cores_per_node") or 1)


def overlap(start: float | None, end: float | None, since: float | None, until: float) -> float:
    """Seconds of [start, end] inside [since, until]; 0 for an interval that never started."""
    if start is None:
        return 0.0
    end = until if end is None else min(end, until)
    start = start if since is None else max(start, since)
    return max(0.0, end - start)


def attempts(run: Run) -> list[Attempt]:
    """Every attempt of a run with its interval (ended_at None: still going): the recorded past ones, then
    the current one once it has started."""
    found = list(run.past_attempts)
    if run.state not in NOT_STARTED and run.started_at is not None:
        # an ended run without ended_at ended when it last changed state
        end = run.ended_at or (run.updated_at if run.state in RUN_ENDED else None)
        found.append(Attempt(attempt=run.attempt, started_at=run.started_at, ended_at=end))
    return found


def job_usage(job: Job, runs: Iterable[Run], now: float | None = None,
              since: float | None = None, until: float | None = None) -> dict[str, Any]:
    """One job's charged core-hours (per run and attempt) and its uncharged desktop hours, in [since, until]."""
    now = time.time() if now is None else now
    until = now if until is None else min(until, now)
    nodes, cores = _shape(job)
    rows, charged = [], 0.0
    for run in runs:
        for attempt in attempts(run):
            seconds = overlap(attempt.started_at, attempt.ended_at, since, until)
            used = nodes * cores * seconds / 3600
            charged += used
            rows.append({"run": run.id, "attempt": attempt.attempt, "started_at": attempt.started_at,
                         "ended_at": attempt.ended_at, "seconds": round(seconds, 3),
                         "core_hours": round(used, 6)})
    return {"id": job.id, "owner": job.owner, "name": job.name, "state": job.state.value,
            "nodes": nodes, "cores_per_node": cores, "core_hours": round(charged, 6),
            "desktop_hours": round(desktop_seconds(job, since, until) / 3600, 6), "attempts": rows}


def desktop_seconds(job: Job, since: float | None, until: float) -> float:
    """How long the job's desktop was there: from the cluster up (the desktop starts with it) until the job
    terminated (or now)."""
    published = job.desktop is not None and bool(job.desktop.model_dump())  # a desktop record with anything in it
    enabled = ((job.spec or {}).get("desktop") or {}).get("enabled", True)
    if not enabled or not published or job.up_at is None:
        return 0.0
    end = job.updated_at if job.state in JOB_TERMINAL else None
    return overlap(job.up_at, end, since, until)


def summarise(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-user totals of job_usage rows."""
    users: dict[str, dict[str, Any]] = {}
    for row in jobs:
        user = users.setdefault(row["owner"] or "", {"jobs": 0, "core_hours": 0.0, "desktop_hours": 0.0})
        user["jobs"] += 1
        user["core_hours"] = round(user["core_hours"] + row["core_hours"], 6)
        user["desktop_hours"] = round(user["desktop_hours"] + row["desktop_hours"], 6)
    return users


def usage(store: Any, owner: str | None, limit: int = 10_000, since: float | None = None,
          until: float | None = None) -> dict[str, Any]:
    """Usage of the newest `limit` jobs (only `owner`'s when given): per job and per user."""
    now = time.time()
    rows = [job_usage(job, store.list_runs(job.id), now, since, until)
            for job in store.list_jobs(limit, owner=owner)]
    users = summarise(rows)
    return {"since": since, "until": min(until, now) if until is not None else now, "jobs": rows, "users": users,
            "total": {"core_hours": round(sum(u["core_hours"] for u in users.values()), 6),
                      "desktop_hours": round(sum(u["desktop_hours"] for u in users.values()), 6)},
            "charged": "core_hours", "note": "desktop time is shown, not charged"}

