"""GET /metrics in the Prometheus text format, read from Redis at scrape time (a custom collector).

Only engine-wide numbers: jobs and runs by state, the job queue and the Celery queues, task outcomes, control
latency, sync lag, node leases. No user names, job ids or anything secret, so the endpoint needs no token.
"""

from __future__ import annotations

from typing import Any, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator.control.metrics import control_latency_histogram, fold_control_latency
from orchestrator.model.events import EventKind
from orchestrator.model.states import JobState, RunState
from orchestrator.worker.celery_app import JOBS_QUEUE, RECONCILE_QUEUE

router = APIRouter(tags=["metrics"])
SYNC_LOOKBACK = 500  # newest events searched per job for its latest sync.stats


def celery_queue_lengths(store: Any, queues: tuple[str, ...] = (JOBS_QUEUE, RECONCILE_QUEUE)) -> dict[str, int]:
    """Messages waiting in each Celery queue (every priority list of it)."""
    return store.metrics.celery_queue_lengths(queues)


def latest_sync_stats(store: Any, job_id: str) -> dict[str, Any] | None:
    event = store.latest_event(job_id, EventKind.SYNC_STATS, SYNC_LOOKBACK)
    return event.data if event else None


def snapshot(store: Any) -> dict[str, Any]:
    """Every number /metrics shows, read from the store now."""
    active = store.active_jobs()
    jobs = dict.fromkeys((s.value for s in JobState), 0)
    for state in store.job_states(active):
        if state:
            jobs[state] += 1
    jobs[JobState.TERMINATED.value] = max(0, store.count_jobs() - len(active))
    runs = dict.fromkeys((s.value for s in RunState), 0)
    lag_p50, lag_max = [], []
    for job_id in active:
        for run in store.list_runs(job_id):
            runs[run.state.value] += 1
        stats = latest_sync_stats(store, job_id)
        if stats:
            lag_p50 += [stats["lag_p50"]] if stats.get("lag_p50") is not None else []
            lag_max += [stats["lag_max"]] if stats.get("lag_max") is not None else []
    return {"jobs": jobs, "runs_of_active_jobs": runs, "queued_jobs": store.queue_length(),
            "celery_queues": celery_queue_lengths(store), "celery_unacked": store.metrics.celery_unacked(),
            "tasks": store.metrics.task_totals(), "control": control_latency_histogram(store),
            "sync_lag_p50": max(lag_p50) if lag_p50 else None, "sync_lag_max": max(lag_max) if lag_max else None,
            "nodes": store.pool_summary(), "safety_net": store.observation.lag()}


class EngineCollector(Collector):
    """Reads the store at every scrape (after folding new control events into the latency histogram)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        fold_control_latency(self.store)
        snap = snapshot(self.store)
        yield _labelled("e2e_jobs", "Jobs by state", "state", snap["jobs"])
        yield _labelled("e2e_runs", "Runs of jobs not yet terminated, by state", "state", snap["runs_of_active_jobs"])
        yield GaugeMetricFamily("e2e_queued_jobs", "Jobs waiting for nodes", value=snap["queued_jobs"])
        yield _labelled("e2e_celery_queue_length", "Messages waiting in each Celery queue", "queue",
                        snap["celery_queues"])
        yield GaugeMetricFamily("e2e_celery_unacked", "Celery messages delivered and not yet acknowledged",
                                value=snap["celery_unacked"])
        overdue, behind = snap["safety_net"]
        yield GaugeMetricFamily("e2e_safety_net_overdue_jobs", "Jobs past their safety-net look (a backlog: the "
                                "workers cannot sweep as fast as the jobs fall due)", value=overdue)
        yield GaugeMetricFamily("e2e_safety_net_lag_seconds", "How long the most overdue job has waited for its "
                                "safety-net look", value=behind)
        tasks = CounterMetricFamily("e2e_celery_tasks", "Celery task outcomes counted by the workers",
                                    labels=["task", "outcome"])
        for task, counts in sorted(snap["tasks"].items()):
            for outcome, n in counts.items():
                tasks.add_metric([task, outcome], n)
        yield tasks
        latency = HistogramMetricFamily("e2e_control_latency_seconds",
                                        "From a control command to its effect (pause: run ended; restart, rerun: "
                                        "run running; terminate: job terminated)", labels=["action"])
        for action, hist in snap["control"].items():
            buckets = [(str(bound), n) for bound, n in hist["buckets"]] + [("+Inf", hist["count"])]
            latency.add_metric([action], buckets, hist["sum"])
        yield latency
        lag = GaugeMetricFamily("e2e_sync_lag_seconds", "Live sync write-to-visible lag, worst job's latest "
                                "sync.stats (NaN: no data)", labels=["stat"])
        for stat in ("p50", "max"):
            value = snap[f"sync_lag_{stat}"]
            lag.add_metric([stat], float("nan") if value is None else value)
        yield lag
        nodes = GaugeMetricFamily("e2e_nodes", "Nodes per backend by lease state", labels=["backend", "state"])
        utilisation = GaugeMetricFamily("e2e_node_utilisation", "Leased share of each backend's nodes",
                                        labels=["backend"])
        for backend, counts in sorted(snap["nodes"].items()):
            for state in ("total", "leased", "drained"):
                nodes.add_metric([backend, state], counts[state])
            utilisation.add_metric([backend], counts["leased"] / counts["total"] if counts["total"] else 0.0)
        yield nodes
        yield utilisation


def _labelled(name: str, doc: str, label: str, values: dict[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def registry_for(store: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(store))
    return registry


@router.get("/metrics", summary="Engine metrics in the Prometheus text format (no per-user data)",
            response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    engine = request.app.state.engine
    if getattr(engine, "metrics_registry", None) is None:
        engine.metrics_registry = registry_for(engine.store)
    return Response(generate_latest(engine.metrics_registry), media_type=CONTENT_TYPE_LATEST)
