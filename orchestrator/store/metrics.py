"""Metrics storage: Celery task outcome counters (totals and per-minute buckets), the control-latency
histogram with its per-job fold cursors, and the Celery queue depths read from the broker's own keys."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Iterable

import redis

from orchestrator.store.keys import CELERY_PRIORITY_STEPS, CELERY_UNACKED, KeyNames

OUTCOMES = ("succeeded", "failed", "retried")
MINUTE_TTL = 3 * 3600  # per-minute buckets kept this long (seconds)

_for_url: dict[tuple[int, str, str], Metrics] = {}


class Metrics:
    """The store's metrics family (`store.metrics`). Works on a client that decodes responses or not."""

    def __init__(self, client: Any, keys: KeyNames) -> None:
        self._r = client
        self._keys = keys

    # -- Celery task outcomes
    def count_task(self, task: str, outcome: str, now: float | None = None) -> None:
        """One outcome of one task, in the totals and in the current minute's bucket."""
        minute = int((time.time() if now is None else now) // 60)
        field = f"{task}:{outcome}"
        pipe = self._r.pipeline(transaction=False)
        pipe.hincrby(self._keys.task_totals, field, 1)
        pipe.hincrby(self._keys.task_minute(minute), field, 1)
        pipe.expire(self._keys.task_minute(minute), MINUTE_TTL)
        pipe.execute()

    def task_totals(self) -> dict[str, dict[str, int]]:
        """task name -> {succeeded, failed, retried} since counting began."""
        return _split(self._r.hgetall(self._keys.task_totals))

    def task_recent(self, minutes: int = 5, now: float | None = None) -> dict[str, dict[str, int]]:
        """task name -> outcome counts over the last `minutes` whole minutes plus the current one."""
        current = int((time.time() if now is None else now) // 60)
        pipe = self._r.pipeline(transaction=False)
        for minute in range(current - minutes, current + 1):
            pipe.hgetall(self._keys.task_minute(minute))
        summed: dict[str, dict[str, int]] = {}
        for bucket in pipe.execute():
            for task, counts in _split(bucket).items():
                row = summed.setdefault(task, dict.fromkeys(OUTCOMES, 0))
                for outcome, n in counts.items():
                    row[outcome] = row.get(outcome, 0) + n
        return summed

    # -- the Celery broker's queues (kombu's keys)
    def celery_queue_lengths(self, queues: Iterable[str]) -> dict[str, int]:
        """Messages waiting in each Celery queue (every priority list of it)."""
        queues = tuple(queues)
        pipe = self._r.pipeline(transaction=False)
        for queue in queues:
            for step in CELERY_PRIORITY_STEPS:
                pipe.llen(self._keys.celery_queue(queue, step))
        lengths = pipe.execute()
        n = len(CELERY_PRIORITY_STEPS)
        return {queue: sum(lengths[i * n:(i + 1) * n]) for i, queue in enumerate(queues)}

    def celery_unacked(self) -> int:
        """Celery messages delivered to a worker and not yet acknowledged."""
        return int(self._r.hlen(CELERY_UNACKED))

    # -- control latency: a cumulative histogram per action, folded from job events by one process at a time
    def try_fold_lock(self, seconds: float) -> bool:
        """Take the fold lock for at most `seconds`; False while another process holds it."""
        return bool(self._r.set(self._keys.control_fold_lock, "1", nx=True, ex=int(seconds)))

    def release_fold_lock(self) -> None:
        self._r.delete(self._keys.control_fold_lock)

    def control_cursors(self) -> dict[str, dict[str, Any]]:
        """job id -> {after: the last event id folded, pending: commands not yet applied}."""
        return {job_id: json.loads(raw) for job_id, raw in self._r.hgetall(self._keys.control_cursor).items()}

    def record_control(self, job_id: str, observed: list[tuple[str, float]], buckets: Iterable[float],
                       cursor: dict[str, Any] | None) -> None:
        """Add the (action, seconds) latencies to the histogram and save the job's cursor (None: forget the
        job, fully read), in one round trip."""
        buckets = tuple(buckets)
        pipe = self._r.pipeline(transaction=False)
        for action, seconds in observed:
            for bound in buckets:
                if seconds <= bound:
                    pipe.hincrby(self._keys.control_latency, f"{action}:le:{bound}", 1)
            pipe.hincrby(self._keys.control_latency, f"{action}:count", 1)
            pipe.hincrbyfloat(self._keys.control_latency, f"{action}:sum", seconds)
        if cursor is not None:
            pipe.hset(self._keys.control_cursor, job_id, json.dumps(cursor))
        else:
            pipe.hdel(self._keys.control_cursor, job_id)
        pipe.execute()

    def control_histogram(self, actions: Iterable[str], buckets: Iterable[float]) -> dict[str, dict[str, Any]]:
        """action -> {buckets: [(bound, cumulative count)], count, sum}."""
        buckets = tuple(buckets)
        raw = self._r.hgetall(self._keys.control_latency)
        out = {}
        for action in actions:
            count = int(raw.get(f"{action}:count", 0))
            out[action] = {"buckets": [(b, int(raw.get(f"{action}:le:{b}", 0))) for b in buckets],
                           "count": count, "sum": float(raw.get(f"{action}:sum", 0.0))}
        return out


def metrics_for_url(url: str, prefix: str = "e2e") -> Metrics:
    """A metrics family on its own short-timeout connection to `url`, one per process (the Celery signal
    handlers count through it: a prefork child must not share its parent's sockets)."""
    key = (os.getpid(), url, prefix)
    if key not in _for_url:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        _for_url[key] = Metrics(client, KeyNames(prefix))
    return _for_url[key]


def _split(raw: dict) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for field, value in raw.items():
        field = field.decode() if isinstance(field, bytes) else field
        task, _, outcome = field.rpartition(":")
        out.setdefault(task, dict.fromkeys(OUTCOMES, 0))[outcome] = int(value)
    return out
