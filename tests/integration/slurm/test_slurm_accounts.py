"""Jobs run as their owner on real Slurm: the allocation is the owner's (squeue shows them), every process of a
run started in it is theirs, the job directory is theirs and private, and the job's signals reach nobody else."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from orchestrator.cluster.identity import lookup
from orchestrator.cluster.local import process_states
from orchestrator.cluster.slurm import SlurmBackend
from orchestrator.model.errors import BackendError
from orchestrator.model.settings import Settings
from tests.integration.sshcluster import ensure_accounts, traversable

from ..conftest import wait_for
from .test_slurm_backend import slurm  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def uid_lines(pids: list[int]) -> dict[int, list[int]]:
    """Real, effective, saved and fs uid of each process still alive (the Slurm node is this machine).

    A run's short-lived children (a loop's `sleep`) may end between listing and reading; they are left out,
    and callers check that the long-lived ones were read."""
    found = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("Uid:"):
                found[pid] = [int(x) for x in line.split()[1:]]
    return found


def test_an_allocation_for_alice_is_hers_and_so_is_every_process_of_its_run(slurm, tmp_path):  # noqa: F811
    ensure_accounts()
    alice, bob = lookup("alice"), lookup("bob")
    traversable(tmp_path)
    backend = SlurmBackend(Settings(home=tmp_path / "home", slurm_partition=slurm.partition, launch_timeout=20))
    node = backend.inventory()[0]
    slurm_id = backend.allocate("ja", [node], 1, account=alice)
    shown = backend.slurm("squeue", "--noheader", f"--jobs={slurm_id}", "--format=%u|%U").stdout.strip()
    assert shown == f"alice|{alice.uid}"
    # the record naming the allocation is the engine's, out of the job's reach
    assert not (backend.settings.root / "jobs" / "ja" / ".slurm-job").exists()
    assert (backend.settings.root / "slurm").stat().st_mode & 0o777 == 0o700

    backend.prepare_node(node, "ja", alice)
    job_dir = node.root / "jobs" / "ja"
    assert (job_dir.stat().st_uid, job_dir.stat().st_mode & 0o777) == (alice.uid, 0o700)
    run_dir = backend.settings.root / "jobs" / "ja" / "runs" / "run-001"
    run_dir.mkdir(parents=True)
    (run_dir / "w.sh").write_text("echo $$ > pid\nexport E2E_RUN_TAG=ja/run-001\nsleep 300 &\nsleep 300 &\nwait\n")
    backend.hand_over(node, backend.settings.root / "jobs" / "ja", alice)
    assert {p.stat().st_uid for p in [run_dir, run_dir / "w.sh"]} == {alice.uid}

    bobs = subprocess.Popen(["setpriv", f"--reuid={bob.uid}", f"--regid={bob.gid}", "--init-groups",
                             "env", "E2E_RUN_TAG=ja/run-001", "sleep", "300"], start_new_session=True)
    try:
        backend.spawn_detached(node, ["bash", "w.sh"], cwd=run_dir, account=alice)
        pid = int(wait_for(lambda: (run_dir / "pid").exists() and (run_dir / "pid").read_text(), 30, "the pid"))
        tagged = wait_for(lambda: len(t := backend.tagged_processes(node, "ja/run-001", alice)) == 2 and t, 20,
                          "both children")
        assert bobs.pid not in tagged  # bob's process carries the tag too: only alice's count
        owners = uid_lines([pid, *tagged])
        assert owners == {p: [alice.uid] * 4 for p in [pid, *tagged]}
        steps = backend.slurm("squeue", "--noheader", "--steps", f"--jobs={slurm_id}", "--format=%i|%u").stdout
        assert f"{slurm_id}.0|alice" in steps.split()  # the run is a step of alice's allocation, hers

        # alice's job cannot signal bob: not his group (forged pid), not his tagged process, not as bob
        with pytest.raises(BackendError, match="not permitted"):
            backend.signal_group(node, bobs.pid, signal.SIGKILL, alice)
        assert backend.signal_tagged(node, "ja/run-001", signal.SIGCONT, alice) == 2
        with pytest.raises(BackendError, match="not to bob"):
            backend.signal_tagged(node, "ja/run-001", signal.SIGKILL, bob)
        assert bobs.poll() is None and process_states([pid]) != {}

        backend.release("ja")
        wait_for(lambda: backend.allocation_state("ja") in ("CANCELLED", "COMPLETED", None), 20, "the end")
        wait_for(lambda: not process_states([pid, *tagged]), 20, "alice's processes to be gone")
        assert bobs.poll() is None
    finally:
        bobs.kill()
        bobs.wait()
        backend.release("ja")


def test_steps_in_an_allocation_run_as_its_owner_whoever_asks(slurm, tmp_path):  # noqa: F811
    """Root may not step into a user's job on Slurm 22.05, and must not need to: lookups run as the owner."""
    ensure_accounts()
    alice = lookup("alice")
    traversable(tmp_path)
    backend = SlurmBackend(Settings(home=tmp_path / "home", slurm_partition=slurm.partition, launch_timeout=20))
    node = backend.inventory()[0]
    backend.allocate("jb", [node], 1, account=alice)
    try:
        done = backend.on_node(node, "id -u; env")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.split()
        assert lines[0] == str(alice.uid)
        assert not [v for v in lines[1:] if v.startswith(("E2E_", "REDIS", "PYTHON")) or "REDIS" in v]
        assert os.geteuid() == 0 and backend.group_alive(node, 999999) is False
    finally:
        backend.release("jb")
