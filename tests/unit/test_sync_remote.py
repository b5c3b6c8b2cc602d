"""The remote side's listing parser and commands, run here through a backend whose `run` executes argv locally
(the same find/sh/mv the node runs), and a sync pass over the SFTP fallback (the backend's file calls)."""

from __future__ import annotations

import os
import subprocess

import pytest

from orchestrator.cluster.base import Node
from orchestrator.cluster.local import LocalBackend
from orchestrator.model.errors import BackendError, UserError
from orchestrator.model.settings import Settings
from orchestrator.sync.engine import SyncPair
from orchestrator.sync.remote import RemoteCopier, RemoteSide, parse_find
from orchestrator.sync.tree import DIR, Entry, LocalSide

HOSTILE = "it's \"odd\" $HOME \\ é\nline.txt"


class CommandBackend(LocalBackend):
    """LocalBackend plus the ssh backend's `run(node, argv, check)`, executed here without a shell."""

    def run(self, node, argv, timeout=None, check=True):
        done = subprocess.run([str(a) for a in argv], capture_output=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise BackendError(f"{argv[0]} failed: {done.stderr.decode(errors='replace')}")
        return done


@pytest.fixture
def remote(tmp_path):
    root = tmp_path / "node-run"
    root.mkdir()
    backend = CommandBackend(Settings(home=tmp_path / "home"))
    return RemoteSide(backend, Node("n1", "127.0.0.1", 1, tmp_path), root)


def test_parse_find_keeps_any_name_and_exact_nanoseconds_and_applies_excludes():
    listing = b"".join(f + b"\0" for f in [
        b"f", b"12", b"1700000000.1234567890", b"", HOSTILE.encode(),
        b"d", b"4096", b"1700000000.0000000000", b"", b"out",
        b"l", b"5", b"1700000001.5", b"../x", b"out/link",
        b"f", b"1", b"1.0", b"", b"out/.a.e2e-sync.1234",          # our temp file: never listed
        b"f", b"1", b"1.0", b"", b"out/core",                      # a core dump
        b"f", b"3", b"1.0", b"", b"bad-\xff-byte"])
    found = parse_find(listing)
    assert found[HOSTILE] == Entry("f", 12, 1_700_000_000_123_456_789)
    assert found["out"] == DIR
    assert found["out/link"] == Entry("l", 0, 1_700_000_001_500_000_000, "../x")
    assert os.fsdecode(b"bad-\xff-byte") in found
    assert len(found) == 4


def test_remote_side_lists_and_changes_a_tree_with_hostile_names(remote):
    root = remote.root
    (root / "out").mkdir()
    (root / "out" / HOSTILE).write_text("x")
    (root / ".e2e").mkdir()
    (root / ".e2e" / "pid").write_text("1")
    os.symlink("out", root / "to-out")
    found = remote.scan()
    st = os.lstat(root / "out" / HOSTILE)
    assert found == {"out": DIR, f"out/{HOSTILE}": Entry("f", 1, st.st_mtime_ns),
                     "to-out": Entry("l", 0, os.lstat(root / "to-out").st_mtime_ns, "out")}
    assert remote.stat(f"out/{HOSTILE}") == found[f"out/{HOSTILE}"] and remote.stat("nothing") is None
    remote.mkdir("new/deeper")
    remote.rename(f"out/{HOSTILE}", f"new/deeper/{HOSTILE}")
    assert (root / "new" / "deeper" / HOSTILE).read_text() == "x"
    assert remote.symlink("-link", "new").target == "new" and os.readlink(root / "-link") == "new"
    remote.remove("-link")
    assert not remote.rmdir("new/deeper") and remote.rmdir("gone")
    remote.remove(f"new/deeper/{HOSTILE}")
    assert remote.rmdir("new/deeper") and not (root / "new" / "deeper").exists()
    (root / "abc").write_text("abc")
    assert remote.sha256("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_remote_side_refuses_paths_through_symlinked_folders_and_a_missing_root(remote, tmp_path):
    os.symlink(tmp_path, remote.root / "escape")
    with pytest.raises(UserError):
        remote.fspath("escape/file")
    with pytest.raises(UserError):
        remote.mkdir("escape/new")
    with pytest.raises(UserError):
        remote.fspath("../x")
    gone = RemoteSide(remote.backend, remote.node, tmp_path / "not-there")
    with pytest.raises(BackendError):
        gone.scan()  # never an empty tree: that would read as "everything was deleted"


def test_a_pass_over_the_sftp_fallback_syncs_both_ways(remote, tmp_path):
    (remote.root / "out").mkdir()
    (remote.root / "out" / HOSTILE).write_bytes(b"from the node")
    os.utime(remote.root / "out" / HOSTILE, (1e9, 1e9))
    local = LocalSide(tmp_path / "engine-run")
    local.root.mkdir()
    pair = SyncPair("run-001@n1", remote, local, tmp_path / "state.json", lambda kind, data: None,
                    copier=RemoteCopier(None, "n1", use_rsync=False))
    assert pair.sync_once().files == 1
    assert (local.root / "out" / HOSTILE).read_bytes() == b"from the node"
    (local.root / "params.txt").write_text("value=2\n")
    os.utime(local.root / "params.txt", (1e9, 1e9))
    assert pair.sync_once().files == 1
    assert (remote.root / "params.txt").read_text() == "value=2\n"
    assert pair.sync_once().files == 0   # nothing changed: nothing moves
