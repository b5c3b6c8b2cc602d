"""Jobs run as their owner, for real: a root engine on the local backend runs alice's and bob's jobs under their
own OS accounts (every process: wrapper, solver, desktop session, sync), with a clean environment, in
0700 folders of their own, and alice's job reaches nothing of bob's or of the engine's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.cluster.identity import lookup
from orchestrator.cluster.local import group_members, tagged_processes
from orchestrator.model.paths import JobPaths, results_dir
from tests.integration import probes
from tests.integration.conftest import wait_for
from tests.integration.desktop_helpers import require_desktop_tools, session_processes, wait_desktop

pytestmark = pytest.mark.integration

# What alice's job tries. $1 bob's job folder, $2 E2E_HOME, $3 the engine's stack.json, $4 the worker's pid,
# $5 bob's run pid (its process group), $6 the Redis data.
ATTEMPTS = {
    "bob-dir": 'ls "$1"',
    "bob-run": 'cat "$1"/runs/run-001/.e2e/*/pid',
    "jobs-list": 'ls "$2/jobs"',
    "stack-json": 'cat "$3"',
    "worker-environ": 'cat /proc/$4/environ',
    "signal-bob": 'kill -0 $5',
    "redis-data": 'ls $6',
    "engine-env": 'env | grep -qi -e redis -e E2E_HOME -e E2E_RUN_AS',
}
PROBE = probes.script({"control": 'ls "$PWD"', **ATTEMPTS})


def _uids(pid: int) -> list[int]:
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("Uid:"))
    return [int(v) for v in line.split()[1:]]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _assert_owned(pid: int, uid: int, what: str) -> None:
    assert _uids(pid) == [uid] * 4, f"{what} (pid {pid}) runs as {_uids(pid)}, not {uid}"
    env = _environ(pid)
    leaked = sorted(k for k in env if "REDIS" in k or k in ("E2E_HOME", "E2E_RUN_AS", "E2E_SOLVER_ENV"))
    assert not leaked, f"{what} holds engine variables {leaked}"


@pytest.fixture(scope="module")
def owners(engine):
    return probes.owners(engine, "alice", "bob")


def _running(engine, job_id: str) -> int:
    doc = engine.client.wait(job_id, lambda d: any(r.state.value == "RUNNING" and r.pid for r in d.runs_detail),
                             timeout=60, poll=0.05)
    return next(r.pid for r in doc.runs_detail if r.pid)


def test_every_process_and_folder_of_a_job_is_its_owners(engine, owners):
    alice = lookup("alice")
    job_id = owners["alice"].submit_data({"name": "mine", "solver": {"name": "command",
                                                                     "command": ["sleep", "600"]}})
    try:
        assert engine.client.store.get_job(job_id).account == "alice"
        pid = _running(engine, job_id)
        _assert_owned(pid, alice.uid, "the run wrapper")
        solver = wait_for(lambda: [p for p in tagged_processes(f"{job_id}/run-001") if p != pid], 30,
                          "the solver's processes (they carry the run tag)")
        for p in solver:
            _assert_owned(p, alice.uid, "the solver")
        paths = JobPaths.for_job(engine.settings.root, job_id)
        sync_pid = wait_for(lambda: paths.sync.pid.exists() and paths.sync.pid.read_text().strip(), 30,
                            "the sync process's pid")
        _assert_owned(int(sync_pid), alice.uid, "the sync process")
        node_dir = engine.settings.root / "nodes" / engine.client.status(job_id).nodes[0] / "jobs" / job_id
        for folder in (paths.root, node_dir):  # the job's folders: alice's alone
            st = folder.stat()
            assert (st.st_uid, st.st_mode & 0o777) == (alice.uid, 0o700), folder
        for folder in (paths.work, paths.root / "runs" / "run-001", paths.root / "runs" / "run-001" / "run.sh"):
            assert folder.stat().st_uid == alice.uid, folder
        assert (engine.settings.root / "jobs").stat().st_mode & 0o777 == 0o711
        engine.client.terminate(job_id)
        engine.wait_job_terminal(job_id)
        results = results_dir(engine.settings.root, job_id)
        assert (results.stat().st_uid, results.stat().st_mode & 0o777) == (alice.uid, 0o700)
    finally:
        engine.client.terminate(job_id)


def test_alices_job_reaches_nothing_of_bobs_or_of_the_engines(engine, owners, redis_url, tmp_path_factory):
    bobs = owners["bob"].submit_data({"name": "bobs", "solver": {"name": "command", "command": ["sleep", "600"]}})
    try:
        bob_pid = _running(engine, bobs)
        stack = engine.settings.stack_file
        assert stack.exists() and "redis_url" in json.loads(stack.read_text())
        worker = engine.stack.read()["pids"]["worker"]
        redis_data = str(tmp_path_factory.getbasetemp() / "redis*")
        argv = ["bash", "-c", PROBE, "probe", str(JobPaths.for_job(
            engine.settings.root, bobs).root), str(engine.settings.root), str(stack), str(worker), str(bob_pid),
            redis_data]
        job_id = owners["alice"].submit_data({"name": "probe", "solver": {"name": "command", "command": argv}})
        doc = engine.wait_run(job_id, timeout=60)
        out = (JobPaths.for_job(engine.settings.root, job_id).root / "runs" / "run-001" / "output.log").read_text()
        probes.check(out, {"control"}, set(ATTEMPTS))  # its own folder it may read: the probe works
        assert os.path.exists(f"/proc/{bob_pid}") and group_members(bob_pid)
        engine.client.terminate(job_id)
        assert doc.runs_detail[0].state.value == "COMPLETED"
    finally:
        engine.client.terminate(bobs)


def test_the_desktop_session_runs_as_the_owner(engine, owners):
    require_desktop_tools()
    bob = lookup("bob")
    job_id = owners["bob"].submit_data({"name": "desk", "solver": {"name": "command", "command": ["sleep", "600"]},
                                        "desktop": {"enabled": True}})
    try:
        assert wait_desktop(engine, job_id).state == "ready"
        desk = JobPaths.for_job(engine.settings.root, job_id).root / "desktop"
        procs = session_processes(int((desk / "pgid").read_text()))
        assert "Xvnc" in procs.values(), procs
        for pid, name in procs.items():
            _assert_owned(pid, bob.uid, name)
        passwd = (desk / "passwd").stat()
        assert (passwd.st_uid, passwd.st_mode & 0o777) == (bob.uid, 0o600)
    finally:
        engine.client.terminate(job_id)
