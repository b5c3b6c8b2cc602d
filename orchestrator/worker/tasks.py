"""Thin Celery tasks: each loads state by id, performs one idempotent lifecycle step, and returns."""

from __future__ import annotations

import logging
import os
import socket
import threading
from functools import lru_cache
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from orchestrator.engine.lifecycle import Lifecycle
from orchestrator.engine.live_edit import apply_live_edit
from orchestrator.engine.nodes_admin import publish_inventories
from orchestrator.engine.notify import Dispatcher, attempt
from orchestrator.model.notify import retry_delay
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


@app.task(name=names.NOTIFY, bind=True, max_retries=None)
def notify(self: Any, task: dict) -> None:
    """One delivery: attempt it; on failure retry after 1, 2, 4... x E2E_NOTIFY_BACKOFF seconds, up to
    E2E_NOTIFY_ATTEMPTS attempts in all (each one logged)."""
    lc = lifecycle()
    number = self.request.retries + 1
    if not attempt(lc.store, lc.settings, task, number, _consumer()) and number < lc.settings.notify_attempts:
        raise self.retry(countdown=retry_delay(number, lc.settings.notify_backoff), max_retries=None)


def _consumer() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


_dispatch_stop = threading.Event()


@worker_ready.connect(weak=False)
def _start_dispatcher(**_kwargs: object) -> None:
    """Each worker's main process runs one notification dispatcher thread (outbox -> delivery tasks)."""
    _dispatch_stop.clear()
    # its own store, not lifecycle()'s: the main process forks pool children, which must not inherit a lifecycle
    settings = get_settings()
    store = JobStore.from_url(settings.resolved_redis_url(), events_maxlen=settings.events_maxlen)
    dispatcher = Dispatcher(store, settings, lambda task: app.send_task(names.NOTIFY, args=[task]), _consumer())
    threading.Thread(target=dispatcher.run, args=(_dispatch_stop,), name="e2e-notify-dispatch", daemon=True).start()


@worker_shutdown.connect(weak=False)
def _stop_dispatcher(**_kwargs: object) -> None:
    _dispatch_stop.set()
