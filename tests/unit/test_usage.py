"""Usage accounting on a fake Redis: core-hours over runs and restart attempts, desktop time apart, windows."""

from __future__ import annotations

import pytest

from orchestrator.engine.attempts import next_attempt
from orchestrator.engine.usage import job_usage, overlap, usage
from orchestrator.model.paths import JobPaths
from orchestrator.model.states import JobState, RunState

T0 = 1_700_000_000.0


def make_job(store, owner: str = "alice", nodes: int = 2, cores: int = 4, desktop: bool = False) -> str:
    spec = {"name": "j", "solver": {"name": "command", "command": ["true"]},
            "cluster": {"nodes": nodes, "cores_per_node": cores}, "desktop": {"enabled": desktop}}
    return store.create_job(name="j", owner=owner, spec=spec, backend="local", solver="command")


def run_attempt(store, job_id: str, run_id: str, start: float, end: float | None, to=RunState.COMPLETED) -> None:
    """PENDING -> LAUNCHING -> RUNNING at `start` (-> `to` at `end`), as the lifecycle records them."""
    store.transition_run(job_id, run_id, RunState.LAUNCHING)
    store.transition_run(job_id, run_id, RunState.RUNNING, started_at=start)
    if end is not None:
        store.transition_run(job_id, run_id, to, ended_at=end)


def hours(store, job_id: str, now: float, **window) -> dict:
    return job_usage(store.get_job(job_id), store.list_runs(job_id), now=now, **window)


def test_one_finished_run_is_charged_nodes_times_cores_times_its_running_time(store):
    job = make_job(store, nodes=2, cores=4)
    run_attempt(store, job, "run-001", T0, T0 + 1800)          # half an hour on 8 cores
    row = hours(store, job, now=T0 + 7200)
    assert row["core_hours"] == pytest.approx(4.0)
    assert [a["seconds"] for a in row["attempts"]] == [1800]


def test_a_running_attempt_counts_up_to_now_and_a_queued_run_counts_nothing(store):
    job = make_job(store, nodes=1, cores=2)
    assert hours(store, job, now=T0)["core_hours"] == 0       # PENDING: never started
    run_attempt(store, job, "run-001", T0, None)
    assert hours(store, job, now=T0 + 3600)["core_hours"] == pytest.approx(2.0)
    assert hours(store, job, now=T0 + 5400)["core_hours"] == pytest.approx(3.0)


def test_every_attempt_of_a_restarted_run_and_every_rerun_is_charged(store, tmp_path):
    job = make_job(store, nodes=1, cores=1)
    run_attempt(store, job, "run-001", T0, T0 + 600, to=RunState.FAILED)
    record = store.get_job(job)
    JobPaths.for_job(tmp_path, job).run("run-001").root.mkdir(parents=True)
    assert next_attempt(store, tmp_path, record, store.get_run(job, "run-001"), by="alice")
    run = store.get_run(job, "run-001")
    # the next attempt does not inherit the last one's start: until it runs it is charged nothing
    assert run.state is RunState.PENDING and run.started_at is None
    assert hours(store, job, now=T0 + 5000)["core_hours"] == pytest.approx(600 / 3600, abs=1e-6)
    run_attempt(store, job, "run-001", T0 + 1000, T0 + 2200)
    rerun = store.add_run(job, after="run-001")
    run_attempt(store, job, rerun, T0 + 3000, T0 + 3600)
    row = hours(store, job, now=T0 + 9000)
    assert [(a["run"], a["attempt"], a["seconds"]) for a in row["attempts"]] == [
        ("run-001", 1, 600), ("run-001", 2, 1200), ("run-002", 1, 600)]
    assert row["core_hours"] == pytest.approx(2400 / 3600, abs=1e-6)


def test_a_window_charges_only_the_overlap(store):
    job = make_job(store, nodes=1, cores=3)
    run_attempt(store, job, "run-001", T0, T0 + 7200)
    row = hours(store, job, now=T0 + 9000, since=T0 + 3600, until=T0 + 5400)
    assert row["core_hours"] == pytest.approx(1.5)
    assert overlap(None, None, None, T0) == 0 and overlap(T0, T0 + 10, T0 + 20, T0 + 30) == 0


def test_desktop_time_is_shown_apart_and_never_charged(store):
    job = make_job(store, nodes=1, cores=1, desktop=True)
    store.transition_job(job, JobState.PROVISIONING)
    store.transition_job(job, JobState.UP, up_at=T0)
    store.update_job(job, desktop={"state": "ready", "ready_at": T0 + 5})
    row = hours(store, job, now=T0 + 7200)                      # the cluster (and desktop) up 2 h, no solver yet
    assert row["core_hours"] == 0 and row["desktop_hours"] == pytest.approx(2.0)


def test_users_see_their_own_totals_and_an_admin_everyones(store):
    a = make_job(store, owner="alice", nodes=1, cores=2)
    b = make_job(store, owner="bob", nodes=2, cores=2)
    run_attempt(store, a, "run-001", T0, T0 + 3600)
    run_attempt(store, b, "run-001", T0, T0 + 1800)
    everyone = usage(store, None)
    assert {u: v["core_hours"] for u, v in everyone["users"].items()} == {"alice": pytest.approx(2.0),
                                                                           "bob": pytest.approx(2.0)}
    assert everyone["total"]["core_hours"] == pytest.approx(4.0)
    alice = usage(store, "alice")
    assert [j["id"] for j in alice["jobs"]] == [a] and set(alice["users"]) == {"alice"}
