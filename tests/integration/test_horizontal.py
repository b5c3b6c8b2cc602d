"""Two worker groups and two beats on one Redis and one shared E2E_HOME (as on two engine hosts with shared
storage): both groups do work, every run starts exactly once, and the second beat (started by mistake)
doubles nothing: reconcile passes take a lease, and every step is a compare-and-set."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from orchestrator.model.paths import JobPaths
from orchestrator.model.states import RunState
from orchestrator.worker.celery_app import JOBS_QUEUE, RECONCILE_QUEUE

from .conftest import Engine, make_settings, redis_flush

pytestmark = pytest.mark.integration

DB = "/3"
JOBS = 12


def _second_group(engine: Engine) -> list[int]:
    """Another worker group and another beat, each with its own name, log and schedule file."""
    stack = engine.stack
    worker_env = stack._env(stack.read()["redis_url"], "worker")
    beat_env = stack._env(stack.read()["redis_url"], "beat")
    logs, run = stack._dir("logs"), stack._dir("run")
    worker = stack._spawn("worker-b", [
        "worker", "-P", "prefork", "-c", "2", "-Q", f"{JOBS_QUEUE},{RECONCILE_QUEUE}", "-n", "group-b@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
        "--logfile", str(logs / "worker-b.log")], worker_env)
    beat = stack._spawn("beat-b", ["beat", "-s", str(run / "beat-b-schedule"), "--pidfile", "", "-l", "INFO",
                                   "--logfile", str(logs / "beat-b.log")], beat_env)
    return [worker, beat]


def test_two_worker_groups_and_two_beats_share_the_work_and_run_nothing_twice(redis_url, tmp_path):
    redis_flush(redis_url + DB)
    engine = Engine(make_settings(tmp_path / "home", redis_url + DB, local_nodes=JOBS, local_cores_per_node=1))
    extra = _second_group(engine)
    client = engine.client
    try:
        time.sleep(3)   # both groups consuming before the burst
        # each start of a run's solver leaves a file of its own: more than one per run is a double start
        command = ["sh", "-c", 'touch "start.$$"; sleep 2']
        jobs = [client.submit_data({"name": f"h{i}", "desktop": {"enabled": False}, "limits": {
            "terminate_on_end": True}, "solver": {"name": "command", "command": command}}) for i in range(JOBS)]
        docs = [engine.wait_job_terminal(job_id, timeout=180) for job_id in jobs]
        assert [d.runs_detail[0].state for d in docs] == [RunState.COMPLETED] * JOBS
        for job_id in jobs:
            results = engine.settings.root / "results" / job_id / "runs" / "run-001"
            starts = list(results.glob("start.*")) or list(
                JobPaths.for_job(engine.settings.root, job_id).run("run-001").root.glob("start.*"))
            assert len(starts) == 1, (job_id, starts)
        logs = engine.stack._dir("logs")
        worked = {name: (logs / name).read_text().count("succeeded") for name in ("worker.log", "worker-b.log")}
        assert all(count > 0 for count in worked.values()), worked   # both groups took tasks
        assert set(client.store.leases("local").values()) == {""}
    finally:
        for pid in extra:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        engine.close()
        for pid in extra:
            with contextlib.suppress(ChildProcessError, ProcessLookupError):
                os.waitpid(pid, 0)
