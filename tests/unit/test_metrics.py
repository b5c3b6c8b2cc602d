"""/metrics on a fake Redis: the exposition parses, and every number matches what the store holds."""

from __future__ import annotations

import math

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.api.metrics import registry_for
from orchestrator.engine import control_latency
from orchestrator.model.events import Event, EventKind
from orchestrator.model.states import JobState, RunState
from orchestrator.store.keys import CELERY_PRIORITY_SEP


def scrape(store) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry_for(store)).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def job(store, owner: str = "alice") -> str:
    spec = {"name": "j", "solver": {"name": "command", "command": ["true"]}}
    return store.create_job(name="j", owner=owner, spec=spec, backend="local", solver="command")


def up_and_running(store, job_id: str) -> None:
    store.transition_job(job_id, JobState.PROVISIONING)
    store.transition_job(job_id, JobState.UP)
    store.transition_run(job_id, "run-001", RunState.LAUNCHING)
    store.transition_run(job_id, "run-001", RunState.RUNNING)


def test_jobs_runs_queues_nodes_tasks_and_sync_lag_match_the_store(store):
    queued = [job(store) for _ in range(2)]
    running = job(store, "bob")
    store.release("local", running)  # off the queue
    up_and_running(store, running)
    done = job(store)
    store.release("local", done)
    store.transition_job(done, JobState.TERMINATING)
    store.transition_job(done, JobState.TERMINATED)
    store._r.rpush("e2e.jobs", "m1", "m2")  # Celery messages (kombu's keys)
    store._r.rpush(f"e2e.jobs{CELERY_PRIORITY_SEP}3", "m3")
    store._r.rpush("e2e.reconcile", "r1")
    store._r.hset("e2e:nodes:local", mapping={"node-00": running, "node-01": "", "node-02": "", "node-03": ""})
    store.drain("local", "node-03", {"reason": "test"})
    for outcome in ("succeeded", "succeeded", "failed"):
        store.metrics.count_task("e2e.launch", outcome)
    store.append_event(running, EventKind.SYNC_STATS, {"files": 3, "lag_p50": 0.2, "lag_max": 0.9})

    m = scrape(store)
    assert m[("e2e_jobs", (("state", "QUEUED"),))] == 2
    assert m[("e2e_jobs", (("state", "UP"),))] == 1
    assert m[("e2e_jobs", (("state", "TERMINATED"),))] == 1
    assert m[("e2e_runs", (("state", "PENDING"),))] == 2 and m[("e2e_runs", (("state", "RUNNING"),))] == 1
    assert m[("e2e_queued_jobs", ())] == len(store.queued_jobs()) == 2
    assert m[("e2e_celery_queue_length", (("queue", "e2e.jobs"),))] == 3
    assert m[("e2e_celery_queue_length", (("queue", "e2e.reconcile"),))] == 1
    assert m[("e2e_celery_tasks_total", (("outcome", "succeeded"), ("task", "e2e.launch")))] == 2
    assert m[("e2e_celery_tasks_total", (("outcome", "failed"), ("task", "e2e.launch")))] == 1
    assert m[("e2e_nodes", (("backend", "local"), ("state", "total")))] == 4
    assert m[("e2e_nodes", (("backend", "local"), ("state", "leased")))] == 1
    assert m[("e2e_nodes", (("backend", "local"), ("state", "drained")))] == 1
    assert m[("e2e_node_utilisation", (("backend", "local"),))] == pytest.approx(0.25)
    assert m[("e2e_sync_lag_seconds", (("stat", "max"),))] == pytest.approx(0.9)
    # the safety net's backlog: the 4 jobs fell due at their creation, none looked at since (the terminated one
    # leaves the schedule at the next claim)
    assert m[("e2e_safety_net_overdue_jobs", ())] == 4 and m[("e2e_safety_net_lag_seconds", ())] > 0
    assert len(store.observation.claim_due(10, lease=30)) == 3
    assert scrape(store)[("e2e_safety_net_overdue_jobs", ())] == 0
    # nothing names a user or a job
    assert not any(v in str(key) for key in m for v in ("alice", "bob", running, *queued))


def test_sync_lag_is_nan_without_data(store):
    m = scrape(store)
    assert math.isnan(m[("e2e_sync_lag_seconds", (("stat", "p50"),))])


def ev(kind: EventKind, ts: float, **data) -> Event:
    return Event(id=f"{int(ts * 1000)}-0", kind=kind, ts=ts, data=data)


def test_commands_are_matched_with_the_event_that_applied_them():
    events = [ev(EventKind.RUN_STATE, 9.9, run="run-001", state="STOPPING"),
              ev(EventKind.CONTROL, 10.0, action="pause", run="run-001"),
              ev(EventKind.RUN_STATE, 10.5, run="run-002", state="PAUSED"),     # another run: not it
              ev(EventKind.RUN_STATE, 12.5, run="run-001", state="PAUSED"),
              ev(EventKind.CONTROL, 20.0, action="restart", run="run-001"),
              ev(EventKind.CONTROL, 30.0, action="terminate")]
    observed, pending = control_latency.step(events, [])
    assert observed == [("pause", 2.5)]
    assert [p[0] for p in pending] == ["restart", "terminate"]
    later = [ev(EventKind.RUN_STATE, 21.0, run="run-001", state="RUNNING"),
             ev(EventKind.JOB_STATE, 40.0, state="TERMINATED")]
    observed, pending = control_latency.step(later, pending)
    assert observed == [("restart", 1.0), ("terminate", 10.0)] and pending == []


def test_control_latency_histogram_counts_each_command_once_across_scrapes(store):
    job_id = job(store)
    store.release("local", job_id)
    up_and_running(store, job_id)
    store.transition_run(job_id, "run-001", RunState.STOPPING)
    store.append_event(job_id, EventKind.CONTROL, {"action": "pause", "run": "run-001", "by": "alice"})
    scrape(store)                                    # the command seen, not applied yet
    store.transition_run(job_id, "run-001", RunState.PAUSED)
    m = scrape(store)
    m = scrape(store)                                # a second scrape adds nothing
    assert m[("e2e_control_latency_seconds_count", (("action", "pause"),))] == 1
    assert m[("e2e_control_latency_seconds_bucket", (("action", "pause"), ("le", "+Inf")))] == 1
    assert 0 <= m[("e2e_control_latency_seconds_sum", (("action", "pause"),))] < 5
