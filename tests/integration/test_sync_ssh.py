"""The live sync with the ssh backend on shared storage: a real sshd per node (network namespaces), the solver
writing on a node, the sync process beside the engine keeping the work folder in step both ways."""

from __future__ import annotations

import pytest

from orchestrator.cluster import sshconn
from orchestrator.model.events import EventKind
from orchestrator.model.paths import JobPaths
from orchestrator.model.states import JobState
from tests.integration.ssh.conftest import _cluster

from .conftest import Engine, make_settings, redis_flush, texts, wait_for

pytestmark = pytest.mark.integration

DB = "/13"  # this module's own Redis database
SOLVER = ('mkdir -p out; for i in $(seq -w 1 100); do hostname > "out/step $i.txt"; '
          'cat params.txt >> "out/step $i.txt"; sleep 0.2; done')


@pytest.fixture(scope="module")
def ssh_sync_engine(redis_url, tmp_path_factory):
    cluster = _cluster(tmp_path_factory.mktemp("sync-sshcluster"))
    redis_flush(redis_url + DB)
    engine = None
    try:
        engine = Engine(make_settings(tmp_path_factory.mktemp("e2e-sync-ssh"), redis_url + DB,
                                      inventory=cluster.inventory()))
        yield engine, cluster
    finally:
        if engine is not None:
            engine.close()
        sshconn.close_all()
        cluster.stop()


def test_outputs_written_on_an_ssh_node_reach_the_work_folder_and_edits_go_back(ssh_sync_engine, tmp_path):
    engine, cluster = ssh_sync_engine
    (tmp_path / "params.txt").write_text("value=1\n")
    client = engine.client
    # a desktop: the consumer the live sync of shared storage runs for (SyncService.wanted)
    job_id = client.submit_data({"name": "sync-ssh", "desktop": {"enabled": True},
                                 "cluster": {"backend": "ssh", "nodes": 1},
                                 "solver": {"name": "command", "command": ["bash", "-c", SOLVER],
                                            "inputs": [str(tmp_path / "params.txt")]}})
    paths = JobPaths.for_job(engine.settings.root, job_id)
    work = paths.work_of("run-001")
    # Given the solver runs on a node (its hostname in each output) and writes every 200 ms
    wait_for(lambda: (work / "out" / "step 003.txt").exists(), 90, "outputs from the node in work/run-001")
    node = (work / "out" / "step 003.txt").read_text().splitlines()[0]
    assert node in {n.name for n in cluster.nodes}, node
    # When the user edits the input on the desktop, the solver on the node uses it
    (work / "params.txt").write_text("value=2\n")
    wait_for(lambda: any("value=2" in text for text in texts(work / "out")), 60,
             "an output from the edited input")
    # Then terminate ends with a final sync, and the sync process stopped
    client.terminate(job_id)
    assert engine.wait_job_terminal(job_id, timeout=120).state is JobState.TERMINATED
    run_outputs = sorted(p.name for p in (paths.run("run-001").root / "out").iterdir())
    assert sorted(p.name for p in (work / "out").iterdir()) == run_outputs
    states = [e.data["state"] for e in client.events(job_id) if e.kind is EventKind.SYNC_STATE]
    assert states[0] == "started" and states[-1] == "stopped", states
