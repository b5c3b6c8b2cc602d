"""Celery task outcome counters in Redis (succeeded, failed, retried per task name), for the monitor and /metrics.

Workers count through Celery signals (connected in celery_app); readers get totals since the store began and
per-minute buckets for recent rates. Counting is best effort: a Redis hiccup loses a count, never a task.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis

OUTCOMES = ("succeeded", "failed", "retried")
MINUTE_TTL = 3 * 3600  # per-minute buckets kept this long (seconds)
PREFIX = "e2e"

_clients: dict[tuple[int, str], redis.Redis] = {}


def totals_key(prefix: str = PREFIX) -> str:
    return f"{prefix}:celery:tasks"


def minute_key(minute: int, prefix: str = PREFIX) -> str:
    return f"{prefix}:celery:minute:{minute}"


def count(client: Any, task: str, outcome: str, now: float | None = None, prefix: str = PREFIX) -> None:
    """One outcome of one task, in the totals and in the current minute's bucket."""
    minute = int((time.time() if now is None else now) // 60)
    field = f"{task}:{outcome}"
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(totals_key(prefix), field, 1)
    pipe.hincrby(minute_key(minute, prefix), field, 1)
    pipe.expire(minute_key(minute, prefix), MINUTE_TTL)
    pipe.execute()


def _split(raw: dict) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for field, value in raw.items():
        field = field.decode() if isinstance(field, bytes) else field
        task, _, outcome = field.rpartition(":")
        out.setdefault(task, dict.fromkeys(OUTCOMES, 0))[outcome] = int(value)
    return out


def totals(client: Any, prefix: str = PREFIX) -> dict[str, dict[str, int]]:
    """task name -> {succeeded, failed, retried} since counting began."""
    return _split(client.hgetall(totals_key(prefix)))


def recent(client: Any, minutes: int = 5, now: float | None = None, prefix: str = PREFIX) -> dict[str, dict[str, int]]:
    """task name -> outcome counts over the last `minutes` whole minutes plus the current one."""
    current = int((time.time() if now is None else now) // 60)
    pipe = client.pipeline(transaction=False)
    for minute in range(current - minutes, current + 1):
        pipe.hgetall(minute_key(minute, prefix))
    summed: dict[str, dict[str, int]] = {}
    for bucket in pipe.execute():
        for task, counts in _split(bucket).items():
            row = summed.setdefault(task, dict.fromkeys(OUTCOMES, 0))
            for outcome, n in counts.items():
                row[outcome] = row.get(outcome, 0) + n
    return summed


def _client_for(url: str) -> redis.Redis:
    key = (os.getpid(), url)  # one connection pool per worker process (prefork children)
    if key not in _clients:
        _clients[key] = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return _clients[key]


def on_outcome(outcome: str):
    """A Celery signal handler counting `outcome` for the sending task."""
    def handler(sender: Any = None, **_: Any) -> None:
        name = getattr(sender, "name", None)
        app = getattr(sender, "app", None)
        if not name or app is None:
            return
        try:
            count(_client_for(app.conf.broker_url), name, outcome)
        except redis.RedisError:
            pass  # a lost count is better than a task failing for bookkeeping
    handler.__name__ = f"count_{outcome}"
    return handler


HANDLERS = {outcome: on_outcome(outcome) for outcome in OUTCOMES}
