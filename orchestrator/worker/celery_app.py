"""The Celery app: JSON only, late acks, prefetch 1, bounded retries, time limits under the visibility timeout."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import beat_init, task_failure, task_retry, task_success, worker_init, worker_ready

from orchestrator.model.errors import StackError
from orchestrator.model.settings import Settings, get_settings
from orchestrator.worker import names, task_stats

JOBS_QUEUE = "e2e.jobs"
RECONCILE_QUEUE = "e2e.reconcile"
INVENTORY_INTERVAL = 10.0   # seconds between publications of the nodes the engine sees
ENGINE_UMASK = 0o077  # every engine process creates files for its own account only (jobs run as others)


def make_app(settings: Settings | None = None) -> Celery:
    """A Celery app bound to the engine's Redis; workers, beat and clients all build it the same way."""
    settings = settings or get_settings()
    try:
        url = settings.resolved_redis_url()
    except StackError:
        url = "redis://127.0.0.1:6379/0"  # placeholder until a stack exists; nothing connects at import
    vt = settings.visibility_timeout
    app = Celery("e2e", broker=url, include=["orchestrator.worker.tasks"])
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        task_ignore_result=True,                 # job state lives in our own hashes and streams
        result_backend=None,
        task_acks_late=True,                     # a task whose worker dies is delivered again...
        worker_prefetch_multiplier=1,            # ...and none waits unacked in a busy worker's buffer
        task_reject_on_worker_lost=False,        # (can loop forever)
        task_retry_on_worker_lost=True,          # bounded by max_retries on each task
        task_soft_time_limit=min(240, vt // 3),
        task_time_limit=min(300, vt // 2),       # soft < hard < visibility timeout
        broker_transport_options={
            "visibility_timeout": vt, "socket_timeout": 30, "health_check_interval": 25,
            "unacked_restore_interval": 10, "unacked_restore_throttle": 3,
        },
        visibility_timeout=vt,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_soft_shutdown_timeout=10,
        worker_hijack_root_logger=False,
        task_default_queue=JOBS_QUEUE,
        task_routes={names.RECONCILE: {"queue": RECONCILE_QUEUE}, names.INVENTORY: {"queue": RECONCILE_QUEUE}},
        beat_schedule={
            "reconcile": {
                "task": names.RECONCILE,
                "schedule": settings.reconcile_interval,
                # a pass that waited behind a dead worker is worthless: the next one is already due
                "options": {"expires": max(5.0, settings.reconcile_interval * 5), "queue": RECONCILE_QUEUE},
            },
            # the nodes as the engine sees them, for every face: a task of its own (probing a silent node takes
            # up to 3 s: never inside the reconcile pass), on the queue the beat may publish to (its ACL user)
            "inventory": {"task": names.INVENTORY, "schedule": INVENTORY_INTERVAL,
                          "options": {"expires": INVENTORY_INTERVAL, "queue": RECONCILE_QUEUE}},
        },
    )
    return app


app = make_app()
# outcome counters for the monitor and /metrics (weak=False: the handlers are module-level closures)
task_success.connect(task_stats.HANDLERS["succeeded"], weak=False)
task_failure.connect(task_stats.HANDLERS["failed"], weak=False)
task_retry.connect(task_stats.HANDLERS["retried"], weak=False)


def _engine_umask(**_kwargs: object) -> None:
    """A worker or beat started any way (the stack, compose, by hand) creates its files 0600/0700."""
    os.umask(ENGINE_UMASK)


worker_init.connect(_engine_umask, weak=False)
beat_init.connect(_engine_umask, weak=False)


def _publish_inventory_now(sender: object = None, **_kwargs: object) -> None:
    """A worker that starts publishes the nodes at once (the beat's first publication is 10 s away)."""
    app.send_task(names.INVENTORY, queue=RECONCILE_QUEUE, expires=INVENTORY_INTERVAL)


worker_ready.connect(_publish_inventory_now, weak=False)
