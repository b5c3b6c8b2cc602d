"""Bench-only Celery app: one no-op task that records its enqueue->start latency, the baseline for latency.py."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

QUEUE = "bench.noop"
TASK = "bench.noop"

# Same transport settings as orchestrator.worker.celery_app, so the baseline is the engine's own queue hop.
app = Celery("bench", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_serializer="json", accept_content=["json"], task_ignore_result=True, result_backend=None,
    task_acks_late=True, worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False, task_default_queue=QUEUE,
)
_redis: redis.Redis | None = None


@app.task(name=TASK)
def noop(reply_key: str, sent_ts: float) -> None:
    """Push (start time - send time) onto reply_key; the connection is made lazily, after the pool forks."""
    started = time.time()
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    _redis.rpush(reply_key, f"{started - sent_ts:.6f}")
    _redis.expire(reply_key, 600)
