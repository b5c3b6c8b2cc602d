"""Admin routes: Celery workers alive (control API, short timeout), queue depths and task rates and failures."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, Depends, Query

from orchestrator.api.deps import API, admin_client
from orchestrator.api.metrics import celery_queue_lengths
from orchestrator.control.service import ControlService

router = APIRouter(prefix=API + "/admin", tags=["admin"])
RATE_MINUTES = 5


@router.get("/workers", summary="Admins: the Celery workers that answer now, with their pools and active tasks")
def workers(client: ControlService = Depends(admin_client),
            timeout: float = Query(1.0, gt=0, le=5, description="seconds to wait for replies")) -> dict[str, Any]:
    inspect = client.celery.control.inspect(timeout=timeout)
    with ThreadPoolExecutor(2) as pool:  # each broadcast waits out the timeout: ask both at once
        stats, active = pool.map(lambda ask: ask() or {}, (inspect.stats, inspect.active))
    rows = []
    for name in sorted(set(stats) | set(active)):
        info = stats.get(name) or {}
        pool = info.get("pool") or {}
        rows.append({"name": name, "pid": info.get("pid"), "concurrency": pool.get("max-concurrency"),
                     "processed": sum((info.get("total") or {}).values()),
                     "active": [{"task": t.get("name"), "args": t.get("args"), "started": t.get("time_start")}
                                for t in active.get(name) or []]})
    return {"timeout": timeout, "workers": rows}


@router.get("/queues", summary="Admins: waiting jobs, Celery queue depths, task outcomes and recent rates")
def queues(client: ControlService = Depends(admin_client)) -> dict[str, Any]:
    recent = client.store.metrics.task_recent(RATE_MINUTES)
    totals = client.store.metrics.task_totals()
    tasks = [{"task": name, **counts, "per_minute": round(sum(recent.get(name, {}).values()) / (RATE_MINUTES + 1), 2),
              "failed_recently": recent.get(name, {}).get("failed", 0)} for name, counts in sorted(totals.items())]
    return {"queued_jobs": client.store.queued_jobs(), "celery": celery_queue_lengths(client.store),
            "unacked": client.store.metrics.celery_unacked(), "tasks": tasks, "rate_window_minutes": RATE_MINUTES + 1}
