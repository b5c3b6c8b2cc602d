"""A Celery worker killed with SIGKILL in the middle of a launch: after a restart, the solver ran exactly once."""

from __future__ import annotations

import pytest
import redis

from orchestrator.model.states import JobState, RunState
from tests.conftest import job_writable

from .conftest import Engine, make_settings, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("point", ["launch.before_spawn", "launch.after_spawn"])
def test_worker_sigkill_during_launch_runs_the_solver_exactly_once(redis_url, tmp_path, point):
    db = 1 if point.endswith("before_spawn") else 2  # a Redis database of its own: no other worker steals tasks
    url = f"{redis_url}/{db}"
    redis.Redis.from_url(url).flushdb()
    marker = tmp_path / "fault-reached"
    # A short visibility timeout, so the killed worker's unacked launch task is also delivered again
    # during the test: the redelivery must not start a second solver either.
    settings = make_settings(tmp_path / "home", url, visibility_timeout=8)
    engine = Engine(settings, worker_env={"E2E_FAULTS": f"{point}:60", "E2E_FAULTS_MARKER": str(marker)})
    try:
        counter = job_writable(tmp_path / "out") / "starts"  # written by the job (e2e-jobs under root)
        client = engine.client
        # Given a solver that records every start of itself
        job_id = client.submit_data({"name": "once", "desktop": {"enabled": False}, "solver": {
            "name": "command", "command": ["bash", "-c", f"echo started >> {counter}; sleep 2"]}})
        # When the worker is killed -9 while the launch task sits at the fault point
        wait_for(marker.exists, 30, f"the worker to reach {point}")
        engine.stack.kill_worker()
        # and a worker without the fault is started again
        engine.stack.worker_env = {}
        engine.stack.start_worker()
        doc = engine.wait_run(job_id, timeout=90)
        # Then the run completed, and the solver started exactly once
        assert doc.runs_detail[0].state is RunState.COMPLETED, doc.runs_detail[0]
        assert doc.state is JobState.UP
        # ... also after the broker handed the killed worker's task out again
        r = redis.Redis.from_url(url)
        wait_for(lambda: r.hlen("unacked") == 0, 60, "the unacked launch task to be redelivered and acked")
        assert counter.read_text().splitlines() == ["started"]
        client.terminate(job_id)
        assert engine.wait_job_terminal(job_id).state is JobState.TERMINATED
        assert counter.read_text().splitlines() == ["started"]
    finally:
        engine.close()
