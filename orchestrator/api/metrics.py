"""GET /metrics in the Prometheus text format, read from Redis at scrape time (a custom collector).

Only engine-wide numbers: jobs and runs by state, the job queue and the Celery queues, task outcomes, control
latency, sync lag, node leases. No user names, job ids or anything secret, so the endpoint needs no token.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator.control.metrics import control_latency_histogram, fold_control_latency
from orchestrator.model.events import EventKind
from orchestrator.model.states import JobState, RunState
from orchestrator.worker import task_stats
from orchestrator.worker.celery_app import JOBS_QUEUE, RECONCILE_QUEUE

router = APIRouter(tags=["metrics"])
PRIORITY_SEP, PRIORITY_STEPS = "\x06\x16", (0, 3, 6, 9)  # kombu's Redis transport: one list per priority step
SYNC_LOOKBACK = 500  # newest events searched per job for its latest sync.stats


def celery_queue_lengths(r: Any, queues: tuple[str, ...] = (JOBS_QUEUE, RECONCILE_QUEUE)) -> dict[str, int]:
    """Messages waiting in each Celery queue (every priority list of it)."""
    pipe = r.pipeline(transaction=False)
    for queue in queues:
        for step in PRIORITY_STEPS:
            pipe.llen(queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}")
    lengths = pipe.execute()
    n = len(PRIORITY_STEPS)
    return {queue: sum(lengths[i * n:(i + 1) * n]) for i, queue in enumerate(queues)}


def latest_sync_stats(store: Any, job_id: str) -> dict[str, Any] | None:
    for _, fields in store.r.xrevrange(store.events_key(job_id), count=SYNC_LOOKBACK):
        if fields.get("kind") == EventKind.SYNC_STATS.value:
            return json.loads(fields["data"])
    return None


def snapshot(store: Any) -> dict[str, Any]:
    """Every number /metrics shows, read from Redis now."""
    r, prefix = store.r, store.prefix
    active = store.active_jobs()
    pipe = r.pipeline(transaction=False)
    for job_id in active:
        pipe.hget(f"{prefix}:job:{{{job_id}}}", "state")
    jobs = dict.fromkeys((s.value for s in JobState), 0)
    for state in pipe.execute():
        if state:
            jobs[state] += 1
    jobs[JobState.TERMINATED.value] = max(0, r.zcard(f"{prefix}:jobs") - len(active))
    runs = dict.fromkeys((s.value for s in RunState), 0)
    lag_p50, lag_max = [], []
    for job_id in active:
        for run in store.list_runs(job_id):
            runs[run.state.value] += 1
        stats = latest_sync_stats(store, job_id)
        if stats:
            lag_p50 += [stats["lag_p50"]] if stats.get("lag_p50") is not None else []
            lag_max += [stats["lag_max"]] if stats.get("lag_max") is not None else []
    nodes = {}
    for key in r.scan_iter(match=f"{prefix}:nodes:*", count=100):
        backend = key[len(prefix) + 7:]
        if ":" in backend:
            continue  # the :drained hash of a pool
        pool = r.hgetall(key)
        drained = r.hlen(f"{key}:drained")
        leased = sum(1 for job in pool.values() if job)
        nodes[backend] = {"total": len(pool), "leased": leased, "drained": drained}
    return {"jobs": jobs, "runs_of_active_jobs": runs, "queued_jobs": r.zcard(f"{prefix}:queue"),
            "celery_queues": celery_queue_lengths(r), "celery_unacked": r.hlen("unacked"),
            "tasks": task_stats.totals(r, prefix), "control": control_latency_histogram(store),
            "sync_lag_p50": max(lag_p50) if lag_p50 else None, "sync_lag_max": max(lag_max) if lag_max else None,
            "nodes": nodes}


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
