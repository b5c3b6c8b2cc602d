"""A node that stops answering mid-run: the probe names it within 15 s and the run fails with that node."""

from __future__ import annotations

import pytest

from orchestrator.engine.node_health import fail_on_node_fault
from orchestrator.model.events import EventKind
from orchestrator.model.states import RunState

from ..conftest import Engine, make_settings, redis_flush, wait_for
from .conftest import backend_for

pytestmark = pytest.mark.integration


def test_silent_node_fails_the_run_naming_it_and_stops_the_rest(own_cluster, redis_url, tmp_path):
    redis_flush(redis_url + "/8")
    engine = Engine(make_settings(tmp_path / "home", redis_url + "/8", inventory=own_cluster.inventory()))
    try:
        client = engine.client
        backend = backend_for(own_cluster, tmp_path)
        job_id = client.submit_data({"name": "sleeper", "desktop": {"enabled": False},
                                     "cluster": {"backend": "ssh", "nodes": 2},
                                     "solver": {"name": "command", "command": ["sleep", "600"]}})
        wait_for(lambda: client.status(job_id).runs_detail[0].state is RunState.RUNNING, 60, "RUNNING")
        job = client.store.get_job(job_id)
        nodes = [n for n in backend.inventory() if n.name in job.nodes]
        run = client.store.get_run(job_id, job.current_run)
        assert fail_on_node_fault(client.store, job, run, backend, nodes, timeout=3) is False  # all answer
        victim = next(n for n in own_cluster.nodes if n.name == nodes[1].name)
        # When the second node goes silent mid-run
        own_cluster.cut(victim)

        def observed():  # what each reconcile pass would do
            current = client.store.get_run(job_id, job.current_run)
            return fail_on_node_fault(client.store, job, current, backend, nodes, timeout=3)
        wait_for(observed, 15, "the silent node to fail the run")
        # Then the run failed naming the node, with an error event, and the run's processes are gone
        run = client.store.get_run(job_id, job.current_run)
        assert run.state is RunState.FAILED
        assert victim.name in run.reason and nodes[0].name not in run.reason.split(":")[0]
        errors = [e.data for e in client.events(job_id) if e.kind is EventKind.ERROR]
        assert errors and errors[-1]["nodes"] == [victim.name]
        wait_for(lambda: not backend.group_alive(nodes[0], run.pid), 10, "the run's group on the head to die")
    finally:
        engine.close()
