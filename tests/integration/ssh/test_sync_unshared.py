"""Live sync with nodes that have their own disks: the solver writes on a node whose run directory the engine
host cannot see; the sync process lists it over ssh and mirrors it into runs/ and work/, edits go back."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from orchestrator.cluster.identity import lookup
from orchestrator.cluster.joblogin import marker
from orchestrator.cluster.ssh import SSHBackend
from orchestrator.model.paths import JobPaths
from orchestrator.model.settings import Settings
from orchestrator.model.states import JobState
from orchestrator.sync.nodelink import NodeLink

from ..conftest import Engine, make_settings, redis_flush, wait_for

pytestmark = pytest.mark.integration

DB = "/12"
HOSTILE = "it's \"odd\" $HOME \\ é\nline.txt"
# Every 300 ms a new output (hostname and the current input), and one output with a hostile name.
SOLVER = ('mkdir -p out; printf x > "out/$HOSTILE_NAME"; for i in $(seq -w 1 200); do '
          '{ cat /proc/sys/kernel/hostname; cat params.txt; } > "out/.step $i.part"; '
          'mv "out/.step $i.part" "out/step $i.txt"; sleep 0.3; done')


@pytest.fixture
def private_engine(private_cluster, redis_url):
    cluster, home = private_cluster
    redis_flush(redis_url + DB)
    inventory = cluster.inventory(shared_storage=False)
    engine = Engine(make_settings(home, redis_url + DB, inventory=inventory))
    try:
        yield engine, SSHBackend(Settings(home=home, inventory=inventory)), home
    finally:
        engine.close()


def test_outputs_on_a_node_with_its_own_disk_reach_the_work_folder_and_edits_go_back(private_engine, tmp_path):
    engine, backend, home = private_engine
    (tmp_path / "params.txt").write_text("value=1\n")
    client = engine.client
    job_id = client.submit_data({"name": "sync-unshared", "desktop": {"enabled": False},
                                 "cluster": {"backend": "ssh", "nodes": 1},
                                 "solver": {"name": "command", "command": ["bash", "-c", SOLVER],
                                            "env": {"HOSTILE_NAME": HOSTILE},
                                            "inputs": [str(tmp_path / "params.txt")]}})
    paths = JobPaths.for_job(home, job_id)
    work, run_root = paths.work_of("run-001"), paths.run("run-001").root
    node = next(n for n in backend.inventory() if n.name == "nodea")
    # Given outputs written on the node, which the engine host cannot see directly
    wait_for(lambda: (work / "out" / "step 003.txt").exists(), 90, "outputs from the node in work/run-001")
    assert (work / "out" / "step 003.txt").read_text().splitlines()[0] == "nodea"
    assert (run_root / "out" / "step 003.txt").exists()   # the engine's runs/ copy is kept current too
    wait_for(lambda: (work / "out" / HOSTILE).exists(), 30, "the output with a hostile name")
    # When the user edits the input and adds a hostile-named file on the desktop, both reach the node
    (work / "params.txt").write_text("value=2\n")
    (work / HOSTILE).write_text("from the desktop\n")
    wait_for(lambda: any("value=2" in p.read_text() for p in (work / "out").glob("step *.txt")), 60,
             "an output from the edited input")
    wait_for(lambda: backend.read_bytes(node, run_root / HOSTILE) == b"from the desktop\n", 30,
             "the desktop's file on the node")
    assert (run_root / "params.txt").read_text() == "value=2\n"  # a restart's stage_in pushes the edit, not the old
    # The sync process is the job's account's, on the head, and reaches the node with the job's own key, which
    # the account's authorized_keys on the node accepts (restricted, from the head only) while the job lives
    account = lookup(engine.client.store.get_job(job_id).account)
    sync_pid = int(paths.sync.pid.read_text())
    assert _uids(sync_pid) == [account.uid] * 4
    assert str(backend.spec(node).key_file) not in Path(f"/proc/{sync_pid}/cmdline").read_text()
    keys = backend.home_dir(node, account) / ".ssh" / "authorized_keys"
    line = next(ln for ln in backend.read_as(node, keys, account).decode().splitlines() if marker(job_id) in ln)
    assert line.startswith('restrict,from="') and (paths.sync.root / "node_key").stat().st_uid == account.uid
    # Then terminate ends with a final sync and the results hold every file of the work folder
    client.terminate(job_id)
    assert engine.wait_job_terminal(job_id, timeout=120).state is JobState.TERMINATED
    on_node = {os.fsdecode(n) for n in backend.run(node, ["ls", "-A", run_root / "out"]).stdout.split(b"\n")}
    outputs = {p.name for p in (work / "out").iterdir()}
    assert outputs >= {n for n in on_node if n.startswith("step ")} and len(outputs) > 3
    assert marker(job_id) not in (backend.read_as(node, keys, account) or b"").decode()  # revoked at the end
    manifest = json.loads((home / "results" / job_id / "manifest.json").read_text())
    stored = {f["path"]: f["sha256"] for f in manifest["files"]}
    for path in work.rglob("*"):
        if path.is_file():
            assert stored[f"work/run-001/{path.relative_to(work)}"] == hashlib.sha256(path.read_bytes()).hexdigest()


def _uids(pid: int) -> list[int]:
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("Uid:"))
    return [int(v) for v in line.split()[1:]]


def test_the_sync_link_opens_while_the_node_is_silent(private_cluster):
    # A sync process (re)started during a node outage must still run: its final pass is what lets a
    # terminate finish. It falls back to SFTP, which needs nothing of the node but to answer again.
    cluster, _ = private_cluster
    cluster.cut(cluster.nodes[0])
    link = NodeLink.open(cluster.inventory(shared_storage=False), cluster.nodes[0].name)
    try:
        assert link.copier.use_rsync is False
    finally:
        link.close()
