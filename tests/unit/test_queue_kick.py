"""A job that leases nodes asks for the next queued job's provision at once, and so does a job that frees
nodes: a burst of submissions never waits for reconcile passes, and FIFO is kept (only the head leases)."""

from __future__ import annotations

import time
from pathlib import Path

from orchestrator.control.service import ControlService
from orchestrator.engine.lifecycle import Lifecycle
from orchestrator.model.settings import Settings
from orchestrator.model.states import JobState, RunState


def _lifecycle(store, tmp_path, kicked: list[str]) -> tuple[Lifecycle, ControlService]:
    settings = Settings(home=tmp_path / "home", redis_url="redis://x/0", local_nodes=2, local_cores_per_node=1)
    celery = type("C", (), {"send_task": lambda *a, **k: None})()   # the submit's own provision task: not run
    lc = Lifecycle.create(store, settings, kick=kicked.append)
    lc.launch = lambda job_id, run_id, redrive=False: None               # nothing spawned: leasing is the point
    lc.ctx.each_service = lambda job, step: None
    return lc, ControlService(settings, store=store, celery=celery)


def test_a_lease_kicks_the_next_queued_job_and_a_job_out_of_turn_waits(store, tmp_path, monkeypatch):
    kicked: list[str] = []
    lc, control = _lifecycle(store, tmp_path, kicked)
    monkeypatch.setattr("orchestrator.engine.lifecycle.prepare_job_tree", lambda *a, **k: None)
    spec = {"desktop": {"enabled": False}, "solver": {"name": "command", "command": ["true"]}}
    a, b, c = (control.submit_data({**spec, "name": n}) for n in ("a", "b", "c"))
    lc.provision(b)                                          # out of turn: b stays queued, nothing kicked
    assert store.get_job(b).state is JobState.QUEUED and kicked == []
    lc.provision(a)                                          # a leases, and asks for b's provision at once
    assert store.get_job(a).state is JobState.UP and kicked == [b]
    lc.provision(b)
    assert store.get_job(b).state is JobState.UP and kicked == [b, c]
    lc.provision(c)                                          # no node left: c waits, nothing more to kick
    assert store.get_job(c).state is JobState.QUEUED and kicked == [b, c]
    store.release("local", a)                                # (what a terminate does at its end)
    lc.ctx.kick_queue()
    assert kicked == [b, c, c]


def test_a_batch_job_terminates_and_frees_its_node_in_the_look_that_sees_its_run_end(store, tmp_path):
    """limits.terminate_on_end: the look that notices the run's end also terminates the job (results stored,
    node freed, the queue kicked), not the job's next look a reconcile interval later."""
    kicked: list[str] = []
    settings = Settings(home=tmp_path / "home", redis_url="redis://x/0", local_nodes=1, local_cores_per_node=1)
    celery = type("C", (), {"send_task": lambda *a, **k: None})()
    lc = Lifecycle.create(store, settings, kick=kicked.append)
    control = ControlService(settings, store=store, celery=celery)
    spec = {"desktop": {"enabled": False}, "solver": {"name": "command", "command": ["true"]},
            "limits": {"terminate_on_end": True}}
    first, second = (control.submit_data({**spec, "name": n}) for n in ("first", "second"))
    lc.provision(first)                                      # launches `true` on the only node
    assert store.get_job(first).state is JobState.UP and kicked == [second]
    run = store.get_run(first, "run-001")
    deadline = time.monotonic() + 10
    while lc.paths(first).run("run-001", run.attempt).exit_code.exists() is False:
        assert time.monotonic() < deadline, "the run never wrote its exit code"
        time.sleep(0.01)
    lc.reconcile_job(first)                                  # one look: run ended -> job TERMINATED
    job = store.get_job(first)
    assert job.state is JobState.TERMINATED and job.results and Path(job.results).is_dir()
    assert store.get_run(first, "run-001").state is RunState.COMPLETED
    assert kicked == [second, second]                        # its node went straight back to the queue
    lc.provision(second)
    assert store.get_job(second).state is JobState.UP


def test_only_a_submission_that_heads_the_queue_sends_its_own_provision(store, tmp_path):
    sent: list[tuple] = []
    settings = Settings(home=tmp_path / "home", redis_url="redis://x/0", local_nodes=2, local_cores_per_node=1)
    celery = type("C", (), {"send_task": lambda self, name, args, **k: sent.append((name, args))})()
    control = ControlService(settings, store=store, celery=celery)
    spec = {"desktop": {"enabled": False}, "solver": {"name": "command", "command": ["true"]}}
    a, b = (control.submit_data({**spec, "name": n}) for n in ("a", "b"))
    assert sent == [("e2e.provision", [a])]                  # b waits for a's kick (a leases, then kicks b)
    store.release("local", a)                                # (a cancelled while queued: off the queue)
    c = control.submit_data({**spec, "name": "c"})
    assert sent == [("e2e.provision", [a])] and store.queue_head() == b != c
    store.release("local", b)
    d = control.submit_data({**spec, "name": "d"})           # c heads the queue now: d waits behind it
    assert sent == [("e2e.provision", [a])] and store.queue_head() == c
    store.release("local", c)
    store.release("local", d)
    e = control.submit_data({**spec, "name": "e"})           # an empty queue: e is its head, and asks
    assert sent[-1] == ("e2e.provision", [e])
