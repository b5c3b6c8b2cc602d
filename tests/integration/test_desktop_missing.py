"""An engine whose head nodes lack the desktop packages still runs jobs; the desktop fails saying what to install."""

from __future__ import annotations

import pytest

from orchestrator.model.states import RunState
from tests.integration.conftest import Engine, make_settings, redis_flush
from tests.integration.desktop_helpers import spec, wait_desktop
from tests.unit.test_desktop_service import path_without

pytestmark = pytest.mark.integration


def test_job_completes_while_its_desktop_fails_for_want_of_xvnc(redis_url, tmp_path):
    url = redis_url + "/3"
    redis_flush(url)
    # jobs (the desktop session too) start with E2E_JOB_PATH, nothing of the worker's environment
    engine = Engine(make_settings(tmp_path / "home", url, job_path=path_without(tmp_path, "Xvnc")))
    try:
        job_id = engine.client.submit_data(spec("no-xvnc", seconds=1))
        rec = wait_desktop(engine, job_id)
        assert rec.state == "failed" and "Xvnc is not installed" in rec.reason
        doc = engine.wait_run(job_id, timeout=60)
        assert doc.runs_detail[0].state is RunState.COMPLETED
        engine.client.terminate(job_id)
        assert engine.wait_job_terminal(job_id).desktop.state == "stopped"
    finally:
        engine.close()
