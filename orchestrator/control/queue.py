"""Where queued jobs stand: their place in the engine's queue and when each is expected to start, replayed from
the store by engine/forecast.py (the nodes are the engine's published inventory, its leases and drains)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from orchestrator.control.protocol import QueuePlace
from orchestrator.engine.forecast import Forecast, Holder, Waiting, forecast
from orchestrator.model.errors import E2EError, NotFound
from orchestrator.model.records import Job
from orchestrator.model.settings import Settings
from orchestrator.model.states import JobState

if TYPE_CHECKING:
    from orchestrator.store.jobs import JobStore


def _walltime(job: Job) -> float | None:
    value = ((job.spec or {}).get("limits") or {}).get("walltime")
    return float(value) if value else None


def forecasts(store: JobStore) -> dict[str, Forecast]:
    """job id -> Forecast for every queued job (one replay for the whole queue)."""
    queue: list[Waiting] = []
    for job_id in store.queued_jobs():
        try:
            job = store.get_job(job_id)
        except NotFound:
            continue
        nodes = int(((job.spec or {}).get("cluster") or {}).get("nodes") or 1)
        queue.append(Waiting(job.id, job.backend, nodes, _walltime(job)))
    if not queue:
        return {}
    now = time.time()
    pools: dict[str, list[str | None]] = {}
    holders: dict[str, Holder] = {}
    for backend in {w.backend for w in queue}:
        leases, drained = store.leases(backend), store.drained(backend)
        published = store.published_inventory(backend)
        names = [n["name"] for n in published["nodes"]] if published else list(leases)
        if not names:
            continue   # nothing known of its nodes yet: no estimate (rather than "no node in service")
        pools[backend] = [leases.get(name) or None for name in names if name not in drained]
        for holder in {h for h in pools[backend] if h}:
            try:
                job = store.get_job(holder)
            except NotFound:
                holders[holder] = Holder(holder, now)   # a lease left behind by a removed job: ends now
                continue
            walltime = _walltime(job)
            started = job.up_at or now
            holders[holder] = Holder(holder, started + walltime if walltime else None)
    return forecast(queue, pools, holders, now)


def scheduler_place(settings: Settings, job: Job) -> QueuePlace | None:
    """A PROVISIONING job whose allocation the site's scheduler has queued: its expected start as the scheduler
    says (`squeue --start` on Slurm)."""
    if job.state is not JobState.PROVISIONING or not job.waiting:
        return None
    from orchestrator.cluster import get_backend

    try:
        when = get_backend(job.backend, settings).expected_start(job.id)
    except E2EError:
        when = None
    return QueuePlace(position=None, expected_start=when, why=job.waiting)
