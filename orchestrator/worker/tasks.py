"""Thin Celery tasks: each loads state by id, performs one idempotent lifecycle step, and returns."""

from __future__ import annotations

import logging
from functools import lru_cache

from orchestrator.engine.lifecycle import Lifecycle
from orchestrator.engine.live_edit import apply_live_edit
from orchestrator.engine.nodes_admin import publish_inventories
from orchestrator.model.settings import get_settings
from orchestrator.store.jobs import JobStore
from orchestrator.worker import names
from orchestrator.worker.celery_app import app

log = logging.getLogger(__name__)

RETRIES = dict(max_retries=3, default_retry_delay=1)


@lru_cache(maxsize=1)
def lifecycle() -> Lifecycle:
    """Built lazily in the worker child (never before fork), once per process."""
    settings = get_settings()
    store = JobStore.from_url(settings.resolved_redis_url(), events_maxlen=settings.events_maxlen)
    return Lifecycle.create(store, settings, kick=lambda job_id: provision.apply_async(args=[job_id]))


@app.task(name=names.PROVISION, **RETRIES)
def provision(job_id: str) -> None:
    lifecycle().provision(job_id)


@app.task(name=names.LAUNCH, **RETRIES)
def launch(job_id: str, run_id: str) -> None:
    lifecycle().launch(job_id, run_id)


@app.task(name=names.SIGNALS, **RETRIES)
def signals(job_id: str, run_id: str) -> None:
    """Apply a control command's effect on the nodes (freeze, resume, graceful stop)."""
    lifecycle().apply_signals(job_id, run_id)


@app.task(name=names.TERMINATE, **RETRIES)
def terminate(job_id: str) -> None:
    lifecycle().drive_termination(job_id)


@app.task(name=names.APPLY_LIVE, max_retries=0)
def apply_live(job_id: str, run_id: str, request: str, old_spec: dict, new_spec: dict, files: dict[str, str],
               by: str = "", deadline: float | None = None) -> None:
    """Apply a live edit to the running solver; the outcome goes to the job's stream (control waits for it)."""
    apply_live_edit(lifecycle(), job_id, run_id, request, old_spec, new_spec, files, by, deadline)


@app.task(name=names.INVENTORY, max_retries=0)
def inventory() -> dict[str, int]:
    lc = lifecycle()
    return publish_inventories(lc.store, lc.settings)


@app.task(name=names.RECONCILE, max_retries=0)
def reconcile() -> int:
    lc = lifecycle()
    # A lease, not a correctness lock (transitions are compare-and-set): it only keeps two passes
    # from doing the same work at once when a pass runs longer than the beat interval. Short, because a
    # worker killed mid-pass holds it until it expires, and nothing is reconciled meanwhile.
    lease = max(10.0, 5 * lc.settings.reconcile_interval)
    lock = lc.store.locks.reconcile(lease)
    if not lock.acquire():
        return 0
    try:
        return lc.reconcile()
    finally:
        try:
            lock.release()
        except Exception:  # noqa: BLE001 - lease expired under a very long pass; harmless
            log.warning("reconcile lease expired before release")
