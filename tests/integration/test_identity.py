"""Jobs run as their owner, for real: a root engine on the local backend runs alice's and bob's jobs under their
own OS accounts (every process: wrapper, solver, desktop session, sync), with a clean environment, in
0700 folders of their own, and alice's job reaches nothing of bob's or of the engine's."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from orchestrator.cluster.identity import lookup
from orchestrator.cluster.local import group_members, tagged_processes
from orchestrator.control.uploads import uploads_root
from orchestrator.model.paths import JobPaths, results_dir
from tests.integration import probes
from tests.integration.conftest import Engine, make_settings, wait_for
from tests.integration.desktop_helpers import require_desktop_tools, session_processes, wait_desktop

pytestmark = pytest.mark.integration

# What alice's job tries. $1 bob's job folder, $2 E2E_HOME, $3 the engine's stack.json (every role's Redis
# password), $4 the worker's pid, $5 bob's run pid (its process group), $6 bob's desktop password file,
# $7 bob's upload, $8 bob's results, $9 the engine's Redis port (its users.acl sits in $2/redis).
ATTEMPTS = {
    "bob-dir": 'ls "$1"',
    "bob-run": 'cat "$1"/runs/run-001/.e2e/*/pid',
    "bob-desktop-password": 'cat "$6"',
    "bob-upload": 'ls "$7"',
    "bob-results": 'ls "$8"',
    "jobs-list": 'ls "$2/jobs"',
    "uploads-list": 'ls "$2/uploads"',
    "stack-json": 'cat "$3"',
    "redis-acl-and-data": 'ls "$2/redis"',
    "engine-logs": 'ls "$2/logs"',
    "worker-environ": 'cat /proc/$4/environ',
    "any-environ-with-redis": 'grep -l -a -i redis /proc/[0-9]*/environ',
    "signal-bob": 'kill -0 $5',
    # Redis answers only a user with a password: a connection without one (the ACL's default user) is refused
    "redis-unauthenticated": 'exec 3<>/dev/tcp/127.0.0.1/$9; printf "PING\r\n" >&3; read -t 5 reply <&3; '
                             'case "$reply" in +PONG*) true ;; *) false ;; esac',
    "engine-env": 'env | grep -qi -e redis -e E2E_HOME -e E2E_RUN_AS',
}
PROBE = probes.script({"control": 'ls "$PWD"', **ATTEMPTS})


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A root engine as `e2e up` runs it: its own embedded Redis with the per-role ACL users (the suite's shared
    Redis has none), so what a job could do with anything it finds is tried against the real thing."""
    settings = make_settings(tmp_path_factory.mktemp("identity-home"), "redis://embedded", redis_url=None)
    eng = Engine(settings)
    yield eng
    eng.close()


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


def test_alices_job_reaches_nothing_of_bobs_or_of_the_engines(engine, owners, tmp_path):
    require_desktop_tools()
    home = engine.settings.root
    (tmp_path / "case").mkdir()
    (tmp_path / "case" / "input.txt").write_text("bob's input\n")
    with tarfile.open(tmp_path / "case.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "case", arcname="case")
    upload = owners["bob"].add_upload(tmp_path / "case.tar.gz")
    finished = owners["bob"].submit_data({"name": "done", "limits": {"terminate_on_end": True},
                                          "solver": {"name": "command", "command": ["true"]}})
    bobs = owners["bob"].submit_data({"name": "bobs", "desktop": {"enabled": True},
                                      "solver": {"name": "command", "command": ["sleep", "600"]}})
    try:
        bob_pid = _running(engine, bobs)
        assert wait_desktop(engine, bobs).state == "ready"
        assert engine.wait_job_terminal(finished).state.value == "TERMINATED"
        stack = engine.settings.stack_file
        assert "redis_urls" in json.loads(stack.read_text())
        port = urlsplit(json.loads(stack.read_text())["redis_urls"]["api"]).port
        targets = {6: JobPaths.for_job(home, bobs).root / "desktop" / "passwd",
                   7: uploads_root(home, owners["bob"].user) / upload["id"], 8: results_dir(home, finished)}
        assert all(path.exists() for path in targets.values()), targets   # each target is real
        argv = ["bash", "-c", PROBE, "probe", JobPaths.for_job(home, bobs).root, home, stack,
                engine.stack.read()["pids"]["worker"], bob_pid, *targets.values(), port]
        job_id = owners["alice"].submit_data({"name": "probe", "solver": {
            "name": "command", "command": [str(a) for a in argv]}})
        doc = engine.wait_run(job_id, timeout=60)
        out = (JobPaths.for_job(home, job_id).root / "runs" / "run-001" / "output.log").read_text()
        probes.check(out, {"control"}, set(ATTEMPTS))  # its own folder it may read: the probe works
        assert os.path.exists(f"/proc/{bob_pid}") and group_members(bob_pid)
        assert not engine.client.store.users.get(owners["alice"].user).admin   # GET /me: still not an admin
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
