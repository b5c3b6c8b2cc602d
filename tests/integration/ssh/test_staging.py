"""Nodes without shared storage: the run directory is staged to the nodes, outputs gathered back on terminate."""

from __future__ import annotations

import pytest

from orchestrator.model.states import JobState, RunState

from ..conftest import Engine, make_settings, redis_flush

pytestmark = pytest.mark.integration


def test_run_on_unshared_storage_is_staged_in_and_gathered_back(private_cluster, redis_url):
    cluster, home = private_cluster
    redis_flush(redis_url + "/9")
    engine = Engine(make_settings(home, redis_url + "/9", inventory=cluster.inventory(shared_storage=False)))
    try:
        client = engine.client
        job_id = client.submit_data({"name": "staged", "desktop": {"enabled": False},
                                     "cluster": {"backend": "ssh", "nodes": 2},
                                     "solver": {"name": "command", "command": [
                                         "sh", "-c", "cat /proc/sys/kernel/hostname > where.txt; "
                                                     "mkdir -p out && echo 42 > out/answer; echo progress: 1/1"]}})
        doc = engine.wait_run(job_id, timeout=60)
        assert doc.runs_detail[0].state is RunState.COMPLETED, doc.runs_detail[0]
        run_dir = home / "jobs" / job_id / "runs" / "run-001"
        # (the live sync may mirror outputs into the head's copy before terminate: test_sync_unshared.py)
        assert (run_dir / "run.sh").is_file()
        client.terminate(job_id)
        assert engine.wait_job_terminal(job_id, timeout=60).state is JobState.TERMINATED
        assert (run_dir / "out" / "answer").read_text() == "42\n"  # final sync / stage_out into the head's copy
        results = home / "results" / job_id / "runs" / "run-001"
        assert (results / "out" / "answer").read_text() == "42\n"
        assert (results / "where.txt").read_text().strip() == "nodea"
    finally:
        engine.close()
