"""Through the engine: a node of a running job goes silent; the run fails naming it; terminate still completes."""

from __future__ import annotations

import pytest

from orchestrator.model.states import JobState, RunState

from ..conftest import Engine, make_settings, redis_flush, wait_for

pytestmark = pytest.mark.integration


def test_engine_fails_the_run_of_a_silent_node(own_cluster, redis_url, tmp_path):
    redis_flush(redis_url + "/11")
    engine = Engine(make_settings(tmp_path / "home", redis_url + "/11", inventory=own_cluster.inventory()))
    try:
        client = engine.client
        job_id = client.submit_data({"name": "sleeper", "desktop": {"enabled": False},
                                     "cluster": {"backend": "ssh", "nodes": 2},
                                     "solver": {"name": "command", "command": ["sleep", "600"]}})
        wait_for(lambda: client.status(job_id).runs_detail[0].state is RunState.RUNNING, 60, "RUNNING")
        victim = client.status(job_id).nodes[1]
        own_cluster.cut(next(n for n in own_cluster.nodes if n.name == victim))
        run = wait_for(lambda: (r := client.status(job_id).runs_detail[0]).state is RunState.FAILED and r,
                       20, "the run to fail")
        assert victim in run.reason
        client.terminate(job_id)
        assert engine.wait_job_terminal(job_id, timeout=60).state is JobState.TERMINATED
    finally:
        engine.close()
