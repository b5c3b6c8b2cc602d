"""The local backend's process-group liveness, on real processes: O(1) while the leader runs, a scan after."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from orchestrator.cluster import local
from orchestrator.cluster.local import group_alive, group_members


def _group(script: str) -> subprocess.Popen:
    return subprocess.Popen(["bash", "-c", script], start_new_session=True, stdout=subprocess.DEVNULL)


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_running_leader_answers_without_scanning_proc(monkeypatch):
    leader = _group("sleep 30")
    try:
        monkeypatch.setattr(local, "group_members", lambda pgid: (_ for _ in ()).throw(AssertionError("scanned")))
        assert group_alive(leader.pid)
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


def test_a_group_lives_while_any_member_runs_after_its_leader_ended():
    # the leader starts a member, then ends (reaped below): the group is alive only through the member
    leader = _group("sleep 30 & echo $! > /dev/null; exit 0")
    leader.wait()  # reaped: no zombie leader left
    _wait(lambda: bool(group_members(leader.pid)))
    assert group_alive(leader.pid)
    os.killpg(leader.pid, signal.SIGKILL)
    _wait(lambda: not group_members(leader.pid))
    assert not group_alive(leader.pid)


def test_a_zombie_leader_alone_is_not_alive():
    leader = _group("exit 0")
    _wait(lambda: local._stat_fields(leader.pid) is not None and local._stat_fields(leader.pid)[0] == "Z")
    try:
        assert not group_alive(leader.pid)  # kill(0) still answers for a zombie: it runs nothing
    finally:
        leader.wait()
    assert not group_alive(leader.pid) and not group_alive(0)
