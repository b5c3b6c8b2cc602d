"""Jobs run as their owner on real sshd nodes: every process (wrapper, MPI ranks on two nodes, their daemon) is the
owner's, the job directory is the owner's and private, signals sent for a job cannot reach another account's
processes, staging writes and reads as the owner, and a user's ssh keys are written as that user."""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path

import pytest

from orchestrator.cluster.identity import lookup
from orchestrator.cluster.ssh import SSHBackend
from orchestrator.cluster.transfer import pull_tree, push_tree
from orchestrator.model.errors import BackendError
from tests.conftest import require
from tests.integration.sshcluster import traversable

from ..conftest import wait_for
from .conftest import backend_for

pytestmark = pytest.mark.integration


@pytest.fixture
def accounts():
    require(os.geteuid() == 0, "root (jobs run as other accounts only under a root engine)")
    return lookup("alice"), lookup("bob")


def uids(backend: SSHBackend, node, pids: list[int]) -> dict[int, list[int]]:
    """The four Uid figures (real, effective, saved, fs) of each process, read on the node."""
    script = 'for p in "$@"; do printf "%s " "$p"; grep "^Uid:" /proc/$p/status; done'
    out = backend.run(node, ["sh", "-c", script, "sh", *map(str, pids)]).stdout.decode()
    return {int(line.split()[0]): [int(x) for x in line.split()[2:]] for line in out.splitlines()}


def at_least(count: int, found: list[int]) -> list[int] | None:
    return found if len(found) >= count else None


def parent(backend: SSHBackend, node, pid: int) -> int:
    return int(backend.run(node, ["awk", "/^PPid:/{print $2}", f"/proc/{pid}/status"]).stdout.decode())


def test_a_two_node_mpi_job_run_as_alice_is_hers_on_every_node_and_cannot_touch_bob(ssh_backend, accounts):
    alice, bob = accounts
    a, b = ssh_backend.inventory()[:2]
    job, other = f"a{secrets.token_hex(3)}", f"b{secrets.token_hex(3)}"
    for node in (a, b):
        ssh_backend.prepare_node(node, job, alice)
        assert ssh_backend.run(node, ["stat", "-c", "%u %a", node.root / "jobs" / job]).stdout.split() == \
            [str(alice.uid).encode(), b"700"]
    ssh_backend.prepare_node(a, other, bob)
    tag = f"{job}/run-001"
    # the wrapper starts mpirun, whose rank on node b is started over ssh as alice (her own node key)
    wrapper = (f"echo $$ > pid; export E2E_RUN_TAG={tag}; "
               f"exec mpirun --host {a.address},{b.address} -np 2 -x E2E_RUN_TAG sleep 120")
    ssh_backend.spawn_detached(a, ["sh", "-c", wrapper], cwd=a.root / "jobs" / job, account=alice)
    ssh_backend.spawn_detached(a, ["sh", "-c", f"echo $$ > pid; exec env E2E_RUN_TAG={other}/run-001 sleep 120"],
                               cwd=a.root / "jobs" / other, account=bob)
    try:
        pgid = int(wait_for(lambda: ssh_backend.read_bytes(a, a.root / "jobs" / job / "pid"), 10, "the pid"))
        bobs = int(wait_for(lambda: ssh_backend.read_bytes(a, a.root / "jobs" / other / "pid"), 10, "bob's pid"))
        on_a = wait_for(lambda: at_least(2, ssh_backend.tagged_processes(a, tag, alice)), 20, "mpirun and its rank")
        on_b = wait_for(lambda: ssh_backend.tagged_processes(b, tag, alice), 20, "the rank on node b")
        daemons = [parent(ssh_backend, b, pid) for pid in on_b]  # orted, started through alice's ssh login
        owners = {**uids(ssh_backend, a, [*ssh_backend.group_members(a, pgid), *on_a])}
        owners.update({-pid: ids for pid, ids in uids(ssh_backend, b, [*on_b, *daemons]).items()})
        assert len(owners) >= 4, owners
        assert all(ids == [alice.uid] * 4 for ids in owners.values()), owners
        assert uids(ssh_backend, a, [bobs])[bobs] == [bob.uid] * 4

        # signals for alice's job never reach bob's process, whatever pid they are aimed at
        with pytest.raises(BackendError, match="not permitted"):
            ssh_backend.signal_group(a, bobs, signal.SIGKILL, alice)
        assert ssh_backend.tagged_processes(a, f"{other}/run-001", alice) == []
        assert ssh_backend.signal_tagged(a, f"{other}/run-001", signal.SIGKILL, alice) == 0
        assert ssh_backend.group_alive(a, bobs)
        # nor can alice's own processes: the kernel refuses her
        attempt = ssh_backend.run(a, ssh_backend.as_job(a, alice, ["kill", "-9", str(bobs)]), check=False)
        assert attempt.returncode != 0 and ssh_backend.group_alive(a, bobs)
    finally:
        for node in (a, b):
            ssh_backend.signal_tagged(node, tag, signal.SIGKILL, alice)
        ssh_backend.signal_tagged(a, f"{other}/run-001", signal.SIGKILL, bob)


def test_staging_as_alice_writes_as_her_on_the_node_and_brings_back_nothing_root_would_follow(
        private_cluster, accounts):
    cluster, home = private_cluster
    alice, _ = accounts
    traversable(home)
    backend = backend_for(cluster, home, shared_storage=False)
    node = backend.inventory()[0]
    runs = home / "jobs" / "j1" / "runs"
    (runs / "run-001").mkdir(parents=True)
    (runs / "run-001" / "case").write_text("input")
    push_tree(backend, node, runs / "run-001", runs / "run-001", alice)
    listed = backend.run(node, ["stat", "-c", "%U %n", runs / "run-001", runs / "run-001" / "case"]).stdout.decode()
    assert [line.split()[0] for line in listed.splitlines()] == ["alice", "alice"]

    # the job owns its runs/ on the node (handed over) and points the next run's directory at root's
    victim = Path(f"/tmp/e2esshslurm-victim-{secrets.token_hex(3)}")  # the node's own /tmp: same as this one
    victim.mkdir(mode=0o755)
    try:
        backend.hand_over(node, home / "jobs" / "j1", alice)
        backend.run(node, backend.as_job(node, alice, ["ln", "-s", str(victim), str(runs / "run-002")]))
        (runs / "run-002").mkdir()
        (runs / "run-002" / "planted").write_text("root's?")
        with pytest.raises(BackendError):
            push_tree(backend, node, runs / "run-002", runs / "run-002", alice)
        assert list(victim.iterdir()) == []
    finally:
        for entry in victim.iterdir():
            entry.unlink()
        victim.rmdir()

    # what the job leaves on the node: a link out of the tree, a set-uid file
    out = runs / "run-001"
    script = 'cd "$1" && ln -s /etc/shadow escape && ln -s case inside && echo 1 > tool && chmod 4755 tool'
    backend.run(node, backend.as_job(node, alice, ["sh", "-c", script, "sh", str(out)]))
    back = home / "back"
    pull_tree(backend, node, out, back, alice)
    assert not os.path.lexists(back / "escape")  # root never follows it later
    assert os.readlink(back / "inside") == "case"
    assert (back / "tool").stat().st_mode & 0o7777 == 0o755
    assert {p.lstat().st_uid for p in [back, *back.iterdir()]} == {alice.uid}


def test_a_users_keys_are_written_as_that_user_into_their_own_ssh_directory(ssh_backend, ssh_cluster, accounts):
    alice, _ = accounts
    node = ssh_backend.inventory()[2]
    home = ssh_backend.home_dir(node, alice)
    assert home == Path(alice.home)  # the account's home on the node, not the engine login's
    ssh_dir = home / ".ssh"
    ssh_backend.make_dirs(node, ssh_dir, 0o700, alice)
    ssh_backend.write_private(node, ssh_dir / "authorized_keys.e2e-test", b"ssh-ed25519 AAAA e2e\n", alice)
    assert ssh_backend.run(node, ["stat", "-c", "%U %a", ssh_dir / "authorized_keys.e2e-test"]).stdout.split() == \
        [b"alice", b"600"]
    # alice points her ~/.ssh at root's: her keys must not land in root's authorized_keys
    root_ssh = ssh_backend.home_dir(node) / ".ssh"
    ssh_backend.run(node, ["mkdir", "-p", "-m", "700", root_ssh])
    before = ssh_backend.read_bytes(node, root_ssh / "authorized_keys")
    moved = home / ".ssh-moved"
    ssh_backend.run(node, ssh_backend.as_job(node, alice, ["mv", str(ssh_dir), str(moved)]))
    try:
        ssh_backend.run(node, ssh_backend.as_job(node, alice, ["ln", "-s", str(root_ssh), str(ssh_dir)]))
        with pytest.raises(BackendError, match="Permission denied"):
            ssh_backend.write_private(node, ssh_dir / "authorized_keys", b"ssh-ed25519 AAAA alice\n", alice)
        assert ssh_backend.read_bytes(node, root_ssh / "authorized_keys") == before
    finally:
        ssh_backend.run(node, ["sh", "-c", 'rm -f -- "$1" && mv -- "$2" "$1"', "sh", ssh_dir, moved])
        ssh_backend.run(node, ["rm", "-f", "--", ssh_dir / "authorized_keys.e2e-test"])
