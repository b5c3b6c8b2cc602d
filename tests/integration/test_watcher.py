"""The run watcher on the real engine (Redis, Celery workers, the beat, detached wrappers): with the safety net
set to look at a followed run only once a minute, a run's end and a killed wrapper are still noticed within a
second or two, because the watcher rang; and the schedule shows the safety net did not look meanwhile."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from orchestrator.model.states import RunState

from .conftest import Engine, make_settings, redis_flush, wait_for

pytestmark = pytest.mark.integration

BATCH = {"desktop": {"enabled": False}, "cluster": {"nodes": 1}}


def _due_in(url: str, job_id: str) -> float:
    score = redis.Redis.from_url(url, decode_responses=True).zscore("e2e:jobs:due", job_id)
    return (score or 0.0) - time.time()


def test_a_run_s_end_and_a_killed_wrapper_are_noticed_at_once_without_the_safety_net(redis_url, tmp_path):
    url = redis_url + "/11"
    redis_flush(url)
    settings = make_settings(tmp_path / "home", url, safety_interval=60)
    engine = Engine(settings)
    try:
        client = engine.client
        ends = client.submit_data({**BATCH, "name": "ends", "solver": {"name": "command", "command": [
            "sh", "-c", "sleep 3; echo done"]}})
        killed = client.submit_data({**BATCH, "name": "killed", "solver": {"name": "command", "command": [
            "sleep", "600"]}})
        for job_id in (ends, killed):
            wait_for(lambda j=job_id: client.status(j).runs_detail[0].state is RunState.RUNNING, 60, "RUNNING")
        # The safety net's next look at a followed run is a minute away (the watcher holds the host) ...
        wait_for(lambda: _due_in(url, killed) > 30 and _due_in(url, ends) > 30, 10,
                 "the safety net to leave the followed runs to the watcher")
        # ... yet the end is seen within a second or two of the wrapper recording it
        doc = wait_for(lambda: (d := client.status(ends)).runs_detail[0].state is RunState.COMPLETED and d, 30,
                       "the run to complete")
        lag = time.time() - doc.runs_detail[0].ended_at   # ended_at: the wrapper's own record of its end
        assert lag < 3.0, f"noticed {lag:.2f}s after the run ended: the safety net, not the watcher"
        # a wrapper killed outright records no exit code: its pidfd rings, and the run fails at once
        pid = client.status(killed).runs_detail[0].pid
        killed_at = time.time()
        os.killpg(pid, signal.SIGKILL)
        doc = wait_for(lambda: (d := client.status(killed)).runs_detail[0].state is RunState.FAILED and d, 10,
                       "the killed run to fail")
        noticed = doc.runs_detail[0].ended_at - killed_at
        assert noticed < 3.0, f"noticed {noticed:.2f}s after the kill: the safety net, not the watcher"
        assert "killed" in (doc.runs_detail[0].reason or "")
    finally:
        engine.close()
