"""The slurm backend against real slurmctld + slurmd + munged: allocation, a run as a step, freeze, cancel."""

from __future__ import annotations

import signal

import pytest

from orchestrator.cluster.local import process_states
from orchestrator.cluster.slurm import SlurmBackend
from orchestrator.model.settings import Settings
from tests.conftest import require
from tests.integration.slurmcluster import SlurmCluster, running, slurm_available

from ..conftest import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def slurm(monkeypatch):
    require(slurm_available(), "Slurm and munge as root (apt-get install slurmctld slurmd slurm-client munge)")
    with running(SlurmCluster(), monkeypatch) as cluster:
        yield cluster


def test_allocation_run_step_suspend_resume_and_cancel(slurm, tmp_path):
    backend = SlurmBackend(Settings(home=tmp_path, slurm_partition=slurm.partition, launch_timeout=20))
    # the partition's node, with its cores, is the inventory
    nodes = backend.inventory()
    assert [n.name for n in nodes] == [slurm.node] and nodes[0].cores >= 1
    # allocate: a holder job named after the engine job, RUNNING on that node
    slurm_id = backend.allocate("job1", nodes, 1)
    assert backend.allocate("job1", nodes, 1) == slurm_id  # idempotent
    assert backend.allocation_state("job1") == "RUNNING"
    # a run starts as a step inside the allocation, in its own process group, tagged
    run_dir = tmp_path / "jobs" / "job1" / "runs" / "run-001"
    run_dir.mkdir(parents=True)
    (run_dir / "w.sh").write_text("echo $$ > pid\nexport E2E_RUN_TAG=job1/run-001\n"
                                  "while :; do sleep 0.2; date +%s.%N >> ticks; done\n")
    backend.spawn_detached(nodes[0], ["bash", "w.sh"], cwd=run_dir)
    pid = int(wait_for(lambda: backend.read_bytes(nodes[0], run_dir / "pid"), 30, "the step's pid"))
    assert backend.group_alive(nodes[0], pid)
    tagged = wait_for(lambda: backend.tagged_processes(nodes[0], "job1/run-001"), 10, "tagged processes")
    assert tagged and pid not in tagged  # children carry the tag (bash's own environ predates its export)
    steps = backend.slurm("squeue", "--noheader", "--steps", f"--jobs={slurm_id}", "--format=%i").stdout.split()
    assert f"{slurm_id}.0" in steps  # the run really is a step of the allocation
    wait_for(lambda: (run_dir / "ticks").exists(), 10, "the first tick")
    # freeze: scontrol suspend stops every process of the job; resume continues them
    backend.suspend("job1")
    assert backend.allocation_state("job1") == "SUSPENDED"
    wait_for(lambda: process_states([pid]) == {"T"}, 10, "the run's processes to be stopped")
    assert backend.group_alive(nodes[0], pid)  # frozen is not dead
    ticks = (run_dir / "ticks").read_text().count("\n")
    backend.resume("job1")
    assert backend.allocation_state("job1") == "RUNNING"
    wait_for(lambda: (run_dir / "ticks").read_text().count("\n") > ticks + 2, 10, "ticks after resume")
    # signals reach the run inside the allocation
    assert backend.signal_tagged(nodes[0], "job1/run-001", signal.SIGCONT) >= 1
    # terminate: scancel ends the allocation and everything in it
    backend.release("job1")
    wait_for(lambda: backend.allocation_state("job1") in ("CANCELLED", None), 20, "the allocation to end")
    wait_for(lambda: not process_states([pid]), 20, "the run's processes to be gone")
    assert backend.group_alive(nodes[0], pid) is False
    backend.release("job1")  # idempotent


def test_node_state_and_load_from_slurm(slurm, tmp_path):
    backend = SlurmBackend(Settings(home=tmp_path, slurm_partition=slurm.partition))
    node = backend.inventory()[0]
    assert backend.probe(node, 10) is None
    assert backend.load(node, 10)[0] >= 0
    backend.slurm("scontrol", "update", f"NodeName={node.name}", "State=DRAIN", "Reason=disk_failed")
    reason = backend.probe(node, 10)
    assert reason and node.name in reason and "drain" in reason and "disk_failed" in reason
    assert "not known" in backend.probe("ghost-node", 10)
