"""Celery task outcome counters (succeeded, failed, retried per task name), for the monitor and /metrics.

Workers count through Celery signals (connected in celery_app) into the store's metrics family; readers get
totals since the store began and per-minute buckets for recent rates (`store.metrics.task_totals()`,
`.task_recent()`). Counting is best effort: a Redis hiccup loses a count, never a task.
"""

from __future__ import annotations

from typing import Any

from orchestrator.store import StoreError
from orchestrator.store.metrics import OUTCOMES, metrics_for_url

PREFIX = "e2e"


def on_outcome(outcome: str):
    """A Celery signal handler counting `outcome` for the sending task."""
    def handler(sender: Any = None, **_: Any) -> None:
        name = getattr(sender, "name", None)
        app = getattr(sender, "app", None)
        if not name or app is None:
            return
        try:
            metrics_for_url(app.conf.broker_url, PREFIX).count_task(name, outcome)
        except StoreError:
            pass  # a lost count is better than a task failing for bookkeeping
    handler.__name__ = f"count_{outcome}"
    return handler


HANDLERS = {outcome: on_outcome(outcome) for outcome in OUTCOMES}
