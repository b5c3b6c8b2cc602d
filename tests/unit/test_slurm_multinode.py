"""How the slurm backend names nodes and starts a multi-node run, checked without Slurm: the command lines."""

from __future__ import annotations

import subprocess

import pytest

from orchestrator.cluster import slurm as slurm_module
from orchestrator.cluster.slurm import NoAllocation, SlurmBackend
from orchestrator.model.settings import Settings


def fake_backend(tmp_path, monkeypatch, answers: dict[str, str]) -> tuple[SlurmBackend, list[list[str]]]:
    """A backend whose Slurm commands answer from `answers` (by command name); the argv of every spawn."""
    backend = SlurmBackend(Settings(home=tmp_path, slurm_partition="p"))
    asked: list[list[str]] = []

    def slurm(*argv, timeout=30.0, check=True):
        asked.append(list(argv))
        return subprocess.CompletedProcess(list(argv), 0, answers.get(argv[0], ""), "")

    spawned: list[list[str]] = []
    monkeypatch.setattr(backend, "slurm", slurm)
    monkeypatch.setattr(backend, "owner", lambda slurm_id: None)   # the engine's own allocation: no drop
    monkeypatch.setattr(slurm_module.subprocess, "run", lambda argv, **kw: spawned.append(argv))
    return backend, spawned


def test_nodes_are_named_by_their_slurm_nodename_not_their_nodeaddr(tmp_path, monkeypatch):
    # mpirun inside an allocation accepts only the allocation's node names in its hostfile
    backend, _ = fake_backend(tmp_path, monkeypatch, {"sinfo": "n1|2\nn2|2\nn2|2\n"})
    nodes = backend.inventory()
    assert [(n.name, n.address, n.cores) for n in nodes] == [("n1", "n1", 2), ("n2", "n2", 2)]


def test_a_run_step_is_shown_the_whole_allocation(tmp_path, monkeypatch):
    backend, spawned = fake_backend(tmp_path, monkeypatch, {"squeue": "n[1-3]|3|6\n"})
    (tmp_path / "jobs" / "j1").mkdir(parents=True)
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "j1").write_text("77 0\n")
    run_dir = tmp_path / "jobs" / "j1" / "runs" / "run-001"
    run_dir.mkdir(parents=True)
    node = slurm_module.Node("n1", "n1", 2, tmp_path / "nodes" / "n1")
    backend.spawn_detached(node, ["bash", "wrapper.sh"], cwd=run_dir)
    argv = spawned[0]
    assert argv[:3] == ["setsid", "--fork", "srun"] and "--jobid=77" in argv and "--nodelist=n1" in argv
    env = argv[argv.index("env"):argv.index("bash")]
    # the step itself is one task on the first node; what runs in it sees the job's three nodes, two slots each
    assert "--nodes=1" in argv[:argv.index("env")]
    assert env == ["env", "SLURM_JOB_NODELIST=n[1-3]", "SLURM_NODELIST=n[1-3]", "SLURM_NNODES=3",
                   "SLURM_JOB_NUM_NODES=3", "SLURM_TASKS_PER_NODE=2(x3)"]
    assert argv[-2:] == ["bash", "wrapper.sh"]


def test_a_run_step_in_an_allocation_slurm_no_longer_lists_is_refused(tmp_path, monkeypatch):
    backend, spawned = fake_backend(tmp_path, monkeypatch, {"squeue": ""})
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "j1").write_text("77 0\n")
    run_dir = tmp_path / "jobs" / "j1" / "runs" / "run-001"
    run_dir.mkdir(parents=True)
    with pytest.raises(NoAllocation, match="77 shows no nodes"):
        backend.spawn_detached(slurm_module.Node("n1", "n1", 2, tmp_path), ["bash", "w.sh"], cwd=run_dir)
    assert spawned == []
