"""A real OpenFOAM job through the whole path: submit, run across 2 virtual nodes, progress, terminate, results."""

from __future__ import annotations

import shutil

import pytest

from orchestrator.cluster.local import group_members
from orchestrator.model.events import EventKind
from orchestrator.model.states import JobState, RunState

from .conftest import CAVITY, PITZ, wait_for

pytestmark = pytest.mark.integration


def _spec(name, case, app, nodes=2, **params):
    return {"name": name, "solver": {"name": "openfoam", "application": app, "case": str(case),
                                     "parameters": params},
            "cluster": {"backend": "local", "nodes": nodes, "cores_per_node": 1}, "desktop": {"enabled": False}}


def test_cavity_runs_to_completion_and_terminate_collects_results(engine, openfoam, tmp_path):
    # Given the cavity tutorial, as a user would copy it
    shutil.copytree(CAVITY, tmp_path / "cavity")
    client = engine.client
    # When it is submitted over two virtual nodes and runs
    job_id = client.submit_data(_spec("cavity", tmp_path / "cavity", "icoFoam", endTime=0.5, writeInterval=20))
    doc = engine.wait_run(job_id, timeout=120)
    run = doc.runs_detail[0]
    # Then the run completed and the cluster is still up until terminate
    assert run.state is RunState.COMPLETED, run
    assert doc.state is JobState.UP
    assert len(doc.nodes) == 2
    events = client.events(job_id)
    run_states = [e.data["state"] for e in events if e.kind is EventKind.RUN_STATE]
    assert run_states == ["LAUNCHING", "RUNNING", "COMPLETED"]
    progress = [e for e in events if e.kind is EventKind.PROGRESS]
    assert progress, "no progress events"
    last = progress[-1].data
    assert last["step"] == pytest.approx(0.5) and last["total"] == pytest.approx(0.5)
    assert {"Ux", "Uy", "p"} <= set(last["residuals"])
    assert last["solver_time"] is not None
    # the run really used mpirun over both slots
    run_dir = engine.settings.root / "jobs" / job_id / "runs" / "run-001"
    assert (run_dir / "processor0").is_dir() and (run_dir / "processor1").is_dir()
    assert "localhost slots=2" in (run_dir / "hostfile").read_text()

    # When the user terminates it
    client.terminate(job_id)
    doc = engine.wait_job_terminal(job_id)
    # Then results hold the reconstructed final time and the log, and the nodes are free again
    assert doc.state is JobState.TERMINATED
    results = engine.settings.root / "results" / job_id / "runs" / "run-001"
    assert (results / "0.5" / "U").is_file()
    assert "End" in (results / "log.icoFoam").read_text()
    assert job_id not in client.store.leases("local").values()
    assert job_id not in client.store.active_jobs()


def test_terminate_stops_a_running_solver_gracefully_with_a_checkpoint(engine, openfoam, tmp_path):
    # Given pitzDaily with an endTime far beyond the point where the test stops it
    shutil.copytree(PITZ, tmp_path / "pitzDaily")
    client = engine.client
    job_id = client.submit_data(_spec("pitz-long", tmp_path / "pitzDaily", "simpleFoam", endTime=5000,
                                      writeInterval=5000))
    # When it has made progress
    wait_for(lambda: (client.status(job_id).runs_detail[0].progress or None)
             and client.status(job_id).runs_detail[0].progress.step >= 20, 120, "progress past step 20")
    pid = client.status(job_id).runs_detail[0].pid
    client.terminate(job_id)
    doc = engine.wait_job_terminal(job_id, timeout=120)
    run = doc.runs_detail[0]
    # Then the solver stopped through the graceful route (stopAt writeNow), wrote its time, and nothing is left
    assert run.state is RunState.STOPPED
    assert run.exit_code == 0, run
    assert run.term_sent_at is None, "needed SIGTERM: the graceful stop did not work"
    results = engine.settings.root / "results" / job_id / "runs" / "run-001"
    written = [p.name for p in results.iterdir() if p.name.replace(".", "").isdigit() and p.name != "0"]
    assert written, "no time directory was written at the stop"
    wait_for(lambda: not group_members(pid), 10, "no live process left in the run's group")


def test_terminate_escalates_to_sigkill_when_the_solver_ignores_signals(engine, tmp_path):
    client = engine.client
    # Given a command that ignores SIGTERM (and has no graceful route)
    job_id = client.submit_data({"name": "stubborn", "desktop": {"enabled": False}, "solver": {
        "name": "command", "command": ["bash", "-c", "trap '' TERM; echo started; sleep 600"]}})
    wait_for(lambda: client.status(job_id).runs_detail[0].state is RunState.RUNNING, 30, "RUNNING")
    pid = client.status(job_id).runs_detail[0].pid
    # (RUNNING comes with the wrapper's pid: CI once terminated within 80 ms, before bash had set its trap)
    output = engine.settings.root / "jobs" / job_id / "runs" / "run-001" / "output.log"
    wait_for(lambda: output.is_file() and "started" in output.read_text(), 30, "the trap set")
    # When terminated
    client.terminate(job_id)
    doc = engine.wait_job_terminal(job_id, timeout=60)
    # Then TERM then KILL were sent, and no process of the run survives
    run = doc.runs_detail[0]
    assert run.state is RunState.STOPPED
    assert run.term_sent_at is not None and run.kill_sent_at is not None
    assert run.kill_sent_at - run.term_sent_at >= engine.settings.kill_grace
    wait_for(lambda: not group_members(pid), 10, "no live process left in the run's group")
    warnings = [e.data["message"] for e in client.events(job_id) if e.kind is EventKind.WARNING]
    assert "sent SIGKILL" in warnings


def test_terminate_is_idempotent_and_safe_concurrently(engine, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    client = engine.client
    job_id = client.submit_data({"name": "short", "desktop": {"enabled": False},
                                 "solver": {"name": "command", "command": ["sleep", "30"]}})
    wait_for(lambda: client.status(job_id).runs_detail[0].state is RunState.RUNNING, 30, "RUNNING")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: client.terminate(job_id), range(4)))
    doc = engine.wait_job_terminal(job_id, timeout=60)
    client.terminate(job_id)  # after the end: a no-op
    assert doc.state is JobState.TERMINATED
    events = client.events(job_id)
    assert len([e for e in events if e.kind is EventKind.CONTROL]) == 1
    assert [e.data["state"] for e in events if e.kind is EventKind.JOB_STATE].count("TERMINATED") == 1


def test_failed_solver_is_reported_with_the_reason_and_keeps_the_cluster(engine, openfoam, tmp_path):
    # Given a case whose controlDict names an application that is not installed... no: a broken mesh dict
    shutil.copytree(CAVITY, tmp_path / "cavity")
    (tmp_path / "cavity" / "system" / "blockMeshDict").write_text("this is not a dictionary {")
    client = engine.client
    job_id = client.submit_data(_spec("broken", tmp_path / "cavity", "icoFoam", nodes=1))
    doc = engine.wait_run(job_id, timeout=60)
    run = doc.runs_detail[0]
    assert run.state is RunState.FAILED
    assert run.exit_code == 2  # the template's blockMesh failure code
    assert doc.state is JobState.UP
    client.terminate(job_id)
    assert engine.wait_job_terminal(job_id).state is JobState.TERMINATED
