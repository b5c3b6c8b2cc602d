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
from orchestrator.engine.sweep import Sweeper
from orchestrator.engine.watcher import RunWatcher
from orchestrator.model.notify import retry_delay
from orchestrator.model.settings import get_settings
from orchestrator.store.jobs import JobStore
from orchestrator.worker import names
from orchestrator.worker.celery_app import RECONCILE_QUEUE, app

log = logging.getLogger(__name__)

RETRIES = dict(max_retries=3, default_retry_delay=1)
SLICE_EXPIRES = 30.0   # a handed-on slice nobody took within this is worthless: the next tick claims afresh


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


@lru_cache(maxsize=1)
def sweeper() -> Sweeper:
    return Sweeper(lifecycle())


@app.task(name=names.RECONCILE, max_retries=0)
def reconcile(tick: bool = True) -> int:
    """The safety net: one slice of the jobs due for a look. A full slice first hands the next one to another
    worker, so a backlog is swept by every free worker at once; only the beat's tick does the housekeeping."""
    def more() -> None:
        reconcile.apply_async(kwargs={"tick": False}, queue=RECONCILE_QUEUE, expires=SLICE_EXPIRES)
    looked = sweeper().sweep(on_more=more)
    if tick:
        sweeper().housekeeping()
    return looked


@app.task(name=names.OBSERVE, bind=True, max_retries=100)
def observe(self: Any, job_id: str) -> None:
    """A run's watcher rang: look at its job now; another worker looking at it right now means again shortly
    (that look may have read the run's files before what rang)."""
    if not sweeper().look_now(job_id):
        raise self.retry(countdown=0.05)


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
    """Each worker's main process runs one notification dispatcher thread (outbox -> delivery tasks) and a run
    watcher thread (this host's runs -> observe tasks; one host-wide holds the lease, the others stand by)."""
    _dispatch_stop.clear()
    # their own stores, not lifecycle()'s: the main process forks pool children, which must not inherit one
    settings = get_settings()
    store = JobStore.from_url(settings.resolved_redis_url(), events_maxlen=settings.events_maxlen)
    dispatcher = Dispatcher(store, settings, lambda task: app.send_task(names.NOTIFY, args=[task]), _consumer())
    threading.Thread(target=dispatcher.run, args=(_dispatch_stop,), name="e2e-notify-dispatch", daemon=True).start()
    watch_store = JobStore.from_url(settings.resolved_redis_url(), events_maxlen=settings.events_maxlen)
    watcher = RunWatcher(watch_store, settings, lambda job_id: app.send_task(names.OBSERVE, args=[job_id]))
    threading.Thread(target=watcher.run, args=(_dispatch_stop,), name="e2e-run-watcher", daemon=True).start()


@worker_shutdown.connect(weak=False)
def _stop_dispatcher(**_kwargs: object) -> None:
    _dispatch_stop.set()
