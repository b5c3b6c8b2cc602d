"""The rsync transfer (used for run directories on other nodes) with the real rsync binary, locally."""

from __future__ import annotations

import os
import shutil

import pytest
from test_sync_engine import HOSTILE, age  # tests/unit is on sys.path (no package)

from orchestrator.sync.copy import RsyncCopier
from orchestrator.sync.engine import SyncPair
from orchestrator.sync.tree import LocalSide
from tests.conftest import require


@pytest.fixture
def pair(tmp_path):
    require(shutil.which("rsync") is not None, "rsync (apt-get install rsync)")
    events = []
    run, work = tmp_path / "run", tmp_path / "work"
    run.mkdir()
    sp = SyncPair("run-001", LocalSide(run), LocalSide(work), tmp_path / "state.json",
                  lambda kind, data: events.append((kind, data)), quiet=0.0, copier=RsyncCopier())
    sp.run, sp.work, sp.events = run, work, events
    return sp


def test_rsync_moves_hostile_names_both_ways(pair):
    for i, name in enumerate(HOSTILE):
        (pair.run / "sub dir").mkdir(exist_ok=True)
        (pair.run / "sub dir" / name).write_text(f"run {i}")
    pair.sync_once()
    for i, name in enumerate(HOSTILE):
        assert (pair.work / "sub dir" / name).read_text() == f"run {i}"
        (pair.work / "sub dir" / name).write_text(f"desktop {i}")
    pair.sync_once()
    assert [(pair.run / "sub dir" / n).read_text() for n in HOSTILE] == [f"desktop {i}" for i in range(len(HOSTILE))]
    assert pair.sync_once().files == 0


def test_rsync_sends_only_the_appended_bytes_and_the_changed_blocks(pair):
    big = pair.run / "series.bin"
    data = bytearray(os.urandom(4 << 20))
    big.write_bytes(data)
    age(big, 30)
    pair.sync_once()
    with open(big, "ab") as fh:
        fh.write(os.urandom(1 << 20))
    age(big, 20)
    appended = pair.sync_once()
    assert (1 << 20) <= appended.bytes < (1 << 20) + (64 << 10)
    data = bytearray(big.read_bytes())
    data[2 << 20: (2 << 20) + 100] = os.urandom(100)   # a rewrite in the middle, same size
    big.write_bytes(data)
    age(big, 10)
    changed = pair.sync_once()
    assert 0 < changed.bytes < 256 << 10
    assert (pair.work / "series.bin").read_bytes() == big.read_bytes()


def test_remote_argv_is_a_list_with_the_host_on_one_side():
    argv = RsyncCopier(remote_shell=["ssh", "-F", "/etc/e2e ssh config"], host="node-02").argv(
        "/jobs/j/runs/run-001/a b", "/jobs/j/work/run-001/a b", append=True)
    assert argv[-3:] == ["--", "/jobs/j/runs/run-001/a b", "node-02:/jobs/j/work/run-001/a b"]
    assert argv[argv.index("-e") + 1] == "ssh -F '/etc/e2e ssh config'"
    assert "-s" in argv and "--append-verify" in argv
