"""How the ssh and slurm backends run a job as its owner, checked without nodes: the command lines they build,
the refusals, the uid filter of tagged lookups, and the head-side chown that never follows a link."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from orchestrator.cluster.owned import hand_over_tree
from orchestrator.cluster.slurm import SlurmBackend
from orchestrator.cluster.ssh import _find_tagged
from orchestrator.cluster.sshconn import Completed
from orchestrator.model.errors import BackendError
from orchestrator.model.identity import Account
from orchestrator.model.settings import Settings
from tests.unit.test_ssh_backend import backend_with

ALICE = Account("alice", 51002, 51002, (51010,), "/home/alice", "/bin/bash")


@pytest.fixture(autouse=True)
def root_engine(monkeypatch):
    monkeypatch.setattr("orchestrator.cluster.identity.multi_user", lambda: True)


def test_spawn_as_an_account_drops_after_setsid_with_a_clean_environment(tmp_path, monkeypatch):
    backend, fake = backend_with(tmp_path, monkeypatch, Completed(0, b"", b""))
    node = backend.inventory()[0]  # logs in as root
    backend.spawn_detached(node, ["bash", "run.sh"], cwd=tmp_path, account=ALICE)
    words = shlex.split(fake.commands[0].split(" && ", 1)[1])
    assert words[:6] == ["exec", "setsid", "--fork", "setpriv", "--reuid=51002", "--regid=51002"]
    assert "--groups=51010" in words and "--bounding-set=-all" in words
    env = words[words.index("env"):words.index("bash")]
    assert env[:2] == ["env", "-i"] and "HOME=/home/alice" in env and "USER=alice" in env
    assert not [w for w in env[2:] if w.split("=")[0] not in ("HOME", "USER", "LOGNAME", "PATH", "SHELL", "LANG")]
    assert words[words.index("bash"):words.index("bash") + 2] == ["bash", "run.sh"]


def test_signals_and_tagged_lookups_run_as_the_account(tmp_path, monkeypatch):
    backend, fake = backend_with(tmp_path, monkeypatch, Completed(0, b"", b""))
    node = backend.inventory()[0]
    assert backend.signal_group(node, 4242, 15, ALICE)
    assert shlex.split(fake.commands[-1])[:2] == ["setpriv", "--reuid=51002"]
    assert shlex.split(fake.commands[-1])[-4:] == ["kill", "-15", "--", "-4242"]
    backend.signal_tagged(node, "j/run-001", 9, ALICE)
    words = shlex.split(fake.commands[-1])
    assert words[:2] == ["setpriv", "--reuid=51002"] and words[-3:-1] == ["sh", "-c"]
    assert "= 51002 ] || continue" in words[-1]  # and only processes whose real uid is the account's


def test_an_account_on_a_node_the_engine_does_not_reach_as_root_is_refused(tmp_path, monkeypatch):
    backend, fake = backend_with(tmp_path, monkeypatch, Completed(0, b"", b""))
    hpc_login = backend.inventory()[1]  # the inventory logs in to n2 as "hpc"
    with pytest.raises(BackendError, match="n2: running jobs as alice needs the engine to log in as root"):
        backend.spawn_detached(hpc_login, ["true"], cwd=tmp_path, account=ALICE)
    assert fake.commands == []
    # the login user's own jobs need no drop, only the clean environment
    backend.spawn_detached(hpc_login, ["true"], cwd=tmp_path, account=Account("hpc", 51003, 51003))
    assert "setpriv" not in fake.commands[0] and "env -i HOME=/ USER=hpc" in fake.commands[0]


def test_a_single_user_engine_refuses_to_vouch_for_other_accounts(tmp_path, monkeypatch):
    monkeypatch.setattr("orchestrator.cluster.identity.multi_user", lambda: False)
    backend, fake = backend_with(tmp_path, monkeypatch, Completed(0, b"", b""))
    with pytest.raises(BackendError, match="needs an engine running as root"):
        backend.spawn_detached(backend.inventory()[0], ["true"], cwd=tmp_path, account=ALICE)
    assert fake.commands == []


def test_prepare_node_gives_the_job_directory_to_the_account_privately(tmp_path, monkeypatch):
    backend, fake = backend_with(tmp_path, monkeypatch, Completed(0, b"", b""))
    node = backend.inventory()[0]
    backend.prepare_node(node, "j1", ALICE)
    words = shlex.split(fake.commands[0])
    assert words[-3:] == [str(node.root / "jobs"), str(node.root / "jobs" / "j1"), "51002:51002"]
    assert "chmod 0711" in words[2] and 'chown -h -- "$3" "$2"' in words[2] and 'chmod 0700 -- "$2"' in words[2]


def test_tagged_lookup_with_a_uid_counts_only_that_uids_processes():
    tag = "j/run-007"
    proc = subprocess.Popen(["sleep", "30"], env={**os.environ, "E2E_RUN_TAG": tag})
    try:
        def found(uid):
            script = _find_tagged(tag, uid) + ' echo "$p"; done'
            return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30).stdout.split()
        assert found(os.getuid()) == [str(proc.pid)]
        assert found(os.getuid() + 4242) == []
    finally:
        proc.kill(), proc.wait()


def test_slurm_steps_run_as_the_allocations_owner_and_refuse_another_account(tmp_path, monkeypatch):
    backend = SlurmBackend(Settings(home=tmp_path))
    backend._owners["77"] = ALICE.uid
    monkeypatch.setattr("orchestrator.cluster.slurm._user_name", lambda uid: "alice")
    monkeypatch.setattr("orchestrator.cluster.slurm.lookup", lambda name: ALICE)
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm-test/slurm.conf")
    argv = backend.as_owner("77", ["srun", "--jobid=77", "true"])
    assert argv[:2] == ["setpriv", "--reuid=51002"] and argv[-3:] == ["srun", "--jobid=77", "true"]
    assert "SLURM_CONF=/etc/slurm-test/slurm.conf" in argv
    with pytest.raises(BackendError, match="belongs to uid 51002, not to bob: refused"):
        backend.as_owner("77", ["srun"], Account("bob", 51004, 51004))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_hand_over_tree_never_follows_a_link_out_of_the_tree(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("root's")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("x")
    (tree / "link").symlink_to(outside)
    (tree / "dirlink").symlink_to(tmp_path)
    hand_over_tree(tree, ALICE)
    hand_over_tree(tmp_path / "missing", ALICE)   # nothing to give: no error
    hand_over_tree(tree / "dirlink", ALICE)        # a link at the top is never followed
    assert outside.stat().st_uid == 0 and tmp_path.stat().st_uid == 0
    assert {p.lstat().st_uid for p in [tree, *tree.rglob("*")]} == {ALICE.uid}
