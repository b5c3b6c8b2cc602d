"""Nothing run twice, nothing lost: worker kill -9 at every control step, a control-plane restart with runs
going, a Redis kill -9 with AOF, and pause racing terminate."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from orchestrator.cluster.local import tagged_processes
from orchestrator.model.errors import InvalidState
from orchestrator.model.records import Run
from orchestrator.model.states import RUN_ENDED, JobState, RunState
from orchestrator.worker.stack import free_port, wait_for_redis
from tests.conftest import job_writable, require

from .conftest import Engine, make_settings, wait_for

pytestmark = pytest.mark.integration

# A solver stand-in that records every start, reports progress, and checkpoints on SIGTERM (the command
# plugin has no graceful route of its own, so pause falls back to SIGTERM and this trap makes it clean).
SOLVER = """
echo "start $E2E_ATTEMPT" >> {starts}
trap 'echo checkpoint > ckpt; exit 0' TERM
for i in $(seq 1 {steps}); do echo "progress: $i/{steps}"; sleep 0.1 & wait $!; done
"""


def _job(client, tmp_path: Path, name: str, steps: int = 600) -> tuple[str, Path]:
    starts = job_writable(tmp_path / "out") / f"{name}.starts"  # written by the job (e2e-jobs under root)
    job_id = client.submit_data({"name": name, "desktop": {"enabled": False}, "solver": {
        "name": "command", "command": ["bash", "-c", SOLVER.format(starts=starts, steps=steps)]}})
    return job_id, starts


def _run(client, job_id: str) -> Run:
    doc = client.status(job_id)
    return next(r for r in doc.runs_detail if r.id == doc.current_run)


def _wait_state(client, job_id: str, states: set[RunState], timeout: float = 60) -> Run:
    return wait_for(lambda: (r := _run(client, job_id)).state in states and r, timeout,
                    f"run of {job_id} in {sorted(s.value for s in states)}")


def _wait_running(client, job_id: str) -> Run:
    return wait_for(lambda: (r := _run(client, job_id)).state is RunState.RUNNING and r.progress and r,
                    60, f"{job_id} running with progress")


# step -> (fault point, what the test does before the fault, starts expected in the end, final run state)
STEPS = {
    "launch": "launch.after_spawn",
    "pause": "control.before_stop",
    "restart": "restart.before_spawn",
    "terminate": "terminate.before_collect",
}


@pytest.mark.parametrize("step", list(STEPS))
def test_worker_sigkill_at_each_control_step(redis_url, tmp_path, step):
    db = 3 + list(STEPS).index(step)  # a database of its own: no other worker takes these tasks
    url = f"{redis_url}/{db}"
    redis.Redis.from_url(url).flushdb()
    marker = tmp_path / "fault-reached"
    settings = make_settings(tmp_path / "home", url, visibility_timeout=8)
    faults = {"E2E_FAULTS": f"{STEPS[step]}:60", "E2E_FAULTS_MARKER": str(marker)}
    engine = Engine(settings, worker_env={} if step != "launch" else faults)
    client = engine.client
    try:
        job_id, starts = _job(client, tmp_path, f"crash-{step}")
        if step != "launch":
            _wait_running(client, job_id)
            engine.stack.stop_process("worker")          # restart the worker with the fault armed
            engine.stack.worker_env = faults
            engine.stack.start_worker()
        if step == "pause":
            client.pause(job_id)
        elif step == "restart":
            client.pause(job_id)
            _wait_state(client, job_id, {RunState.PAUSED})
            client.restart(job_id)
        elif step == "terminate":
            client.terminate(job_id)
        # When the worker is killed -9 at the fault point, and a worker without the fault starts
        wait_for(marker.exists, 30, f"the worker to reach {STEPS[step]}")
        engine.stack.kill_worker()
        engine.stack.worker_env = {}
        engine.stack.start_worker()
        # Then the step completes, and the solver started exactly once per intended start
        expected_starts = {"launch": ["start 1"], "pause": ["start 1"], "restart": ["start 1", "start 2"],
                           "terminate": ["start 1"]}[step]
        if step == "launch":
            _wait_running(client, job_id)
        elif step == "pause":
            run = _wait_state(client, job_id, set(RUN_ENDED))
            assert run.state is RunState.PAUSED and run.exit_code == 0, (run.reason, run.exit_code)
        elif step == "restart":
            run = _wait_running(client, job_id)
            assert run.attempt == 2
        if step != "terminate":
            r = redis.Redis.from_url(url)
            wait_for(lambda: r.hlen("unacked") == 0, 60, "the killed worker's task redelivered and acked")
            assert starts.read_text().splitlines() == expected_starts
            client.terminate(job_id)
        doc = engine.wait_job_terminal(job_id, timeout=90)
        assert doc.state is JobState.TERMINATED
        assert starts.read_text().splitlines() == expected_starts
        assert tagged_processes(f"{job_id}/run-001") == [], "orphan processes after terminate"
        assert (settings.root / "results" / job_id / "runs" / "run-001" / "output.log").is_file()
    finally:
        engine.close()


def test_control_plane_restart_reattaches_running_jobs(redis_url, tmp_path):
    url = f"{redis_url}/7"
    redis.Redis.from_url(url).flushdb()
    engine = Engine(make_settings(tmp_path / "home", url))
    client = engine.client
    try:
        jobs = [_job(client, tmp_path, f"keep-{i}", steps=60) for i in range(3)]
        for job_id, _ in jobs:
            _wait_running(client, job_id)
        pids = {job_id: _run(client, job_id).pid for job_id, _ in jobs}
        # When every worker and the beat loop stop while the 3 runs go on
        engine.stack.stop_process("beat")
        engine.stack.stop_process("worker")
        time.sleep(2)
        engine.stack.start()
        # Then each run is re-attached (same pid, progress moves on) and completes: none relaunched
        for job_id, starts in jobs:
            run = _wait_state(client, job_id, set(RUN_ENDED), timeout=90)
            assert run.state is RunState.COMPLETED and run.pid == pids[job_id]
            assert run.progress.step == 60
            assert starts.read_text().splitlines() == ["start 1"]
        for job_id, _ in jobs:
            client.terminate(job_id)
            assert engine.wait_job_terminal(job_id).state is JobState.TERMINATED
    finally:
        engine.close()


def test_redis_sigkill_with_aof_loses_nothing(tmp_path):
    binary = shutil.which("redis-server")
    require(binary is not None, "redis-server (apt-get install redis-server)")
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--appendonly", "yes",
            "--appendfsync", "everysec", "--save", ""]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_redis(url)
    engine = Engine(make_settings(tmp_path / "home", url))
    client = engine.client
    try:
        jobs = [_job(client, tmp_path, f"aof-{i}", steps=80) for i in range(2)]
        for job_id, _ in jobs:
            _wait_running(client, job_id)
        before = {job_id: (client.store.get_job(job_id), [e.id for e in client.events(job_id)])
                  for job_id, _ in jobs}
        # When Redis is killed -9 mid-run and started again on the same data
        server.kill()
        server.wait(10)
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_redis(url)
        # Then every job and every event seen before the kill is still there, and the jobs carry on
        for job_id, (job, event_ids) in before.items():
            assert client.store.get_job(job_id).spec == job.spec
            after = [e.id for e in client.events(job_id)]
            assert after[:len(event_ids)] == event_ids
        for job_id, starts in jobs:
            # (as `e2e up` does: a worker kombu made exit on the Redis flap is started again)
            run = wait_for(lambda: engine.stack.revive() is not None and (r := _run(client, job_id)).state
                           in RUN_ENDED and r, 120, f"run of {job_id} ended")
            assert run.state is RunState.COMPLETED, run
            assert starts.read_text().splitlines() == ["start 1"]
        for job_id, _ in jobs:
            client.edit(job_id, ["limits.walltime=1h"])
            client.terminate(job_id)
            assert engine.wait_job_terminal(job_id).state is JobState.TERMINATED
            assert client.history(job_id).revision == 2
    finally:
        engine.close()
        server.terminate()
        server.wait(10)


def test_pause_racing_terminate_always_ends_consistent(redis_url, tmp_path):
    url = f"{redis_url}/8"
    redis.Redis.from_url(url).flushdb()
    engine = Engine(make_settings(tmp_path / "home", url, stop_grace=5, kill_grace=2))
    client = engine.client
    rounds, batch = 24, 8  # 8 virtual nodes: 8 jobs race at a time
    outcomes = []
    try:
        for first in range(0, rounds, batch):
            jobs = [_job(client, tmp_path, f"race-{i}")[0] for i in range(first, min(rounds, first + batch))]
            for job_id in jobs:
                _wait_running(client, job_id)
            errors: list[BaseException] = []

            def race(job_id: str) -> None:
                barrier = threading.Barrier(2)

                def pause():
                    barrier.wait()
                    try:
                        client.pause(job_id)
                    except InvalidState:
                        pass  # terminate won: refusing the pause is the consistent answer
                    except BaseException as exc:  # noqa: BLE001
                        errors.append(exc)

                def terminate():
                    barrier.wait()
                    client.terminate(job_id)

                threads = [threading.Thread(target=pause), threading.Thread(target=terminate)]
                [t.start() for t in threads]
                [t.join(30) for t in threads]

            for job_id in jobs:
                race(job_id)
            assert not errors, errors
            for job_id in jobs:
                doc = engine.wait_job_terminal(job_id, timeout=90)
                run = doc.runs_detail[0]
                assert doc.state is JobState.TERMINATED
                assert run.state in (RunState.PAUSED, RunState.STOPPED), run
                assert tagged_processes(f"{job_id}/run-001") == [], f"orphans of {job_id}"
                assert job_id not in client.store.leases("local").values()
                outcomes.append(run.state)
        assert len(outcomes) == rounds
    finally:
        engine.close()
