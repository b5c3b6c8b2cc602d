"""Jobs run as their owner: the account chosen at submit, the create-user mapping, and the local backend's
handling of job-owned files and processes (no symlink followed, no other uid signalled)."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.cluster import identity
from orchestrator.cluster.base import Node
from orchestrator.cluster.local import LocalBackend
from orchestrator.cluster.owned import hand_over_tree, read_confined, uid_of, write_confined
from orchestrator.control import accounts
from orchestrator.control.service import ControlService
from orchestrator.model.errors import BackendError, UserError
from orchestrator.model.settings import Settings
from tests.conftest import require_root

SLEEPER = {"name": "s", "solver": {"name": "command", "command": ["sleep", "1"]}}


def _service(store, tmp_path, user=None, admin=None, **settings):
    sent = []
    svc = ControlService(Settings(home=tmp_path, redis_url="redis://x/0", **settings), store=store, user=user,
                         admin=admin, celery=type("C", (), {"send_task": lambda *a, **k: sent.append(a)})())
    return svc


# -- the account at submit
def test_single_user_engine_runs_every_job_as_itself(store, tmp_path, monkeypatch):
    monkeypatch.setattr(identity, "multi_user", lambda: False)
    job_id = _service(store, tmp_path, run_as="").submit_data(SLEEPER)
    assert store.get_job(job_id).account == identity.current().name
    with pytest.raises(UserError, match="single-user mode: every job runs as .*other users need a root engine"):
        accounts.create_user(store, "alice")
    assert store.users.list() == []  # nothing changed


def test_root_engine_refuses_a_cli_job_without_run_as(store, tmp_path, monkeypatch):
    monkeypatch.setattr(identity, "multi_user", lambda: True)
    with pytest.raises(UserError, match="the engine runs no job as root: set E2E_RUN_AS or submit as an API user"):
        _service(store, tmp_path, run_as="").submit_data(SLEEPER)
    with pytest.raises(UserError, match="E2E_RUN_AS: 'root' is root"):
        _service(store, tmp_path, run_as="root").submit_data(SLEEPER)
    assert store.active_jobs() == []


def test_root_engine_runs_an_api_users_job_as_their_mapped_account(store, tmp_path, monkeypatch):
    require_root()
    monkeypatch.setattr(identity, "multi_user", lambda: True)
    store.users.create("ann")
    with pytest.raises(UserError, match="user 'ann' has no OS account to run jobs as; .*map-user ann"):
        _service(store, tmp_path, user="ann", admin=False).submit_data(SLEEPER)
    with pytest.raises(UserError, match="--os-user: 'root' is root"):
        accounts.map_user(store, "ann", "root")
    with pytest.raises(UserError, match="--os-user: no OS account 'nobody-here'"):
        accounts.map_user(store, "ann", "nobody-here")
    accounts.map_user(store, "ann", "alice")
    assert store.users.get("ann").os_user == "alice"
    job_id = _service(store, tmp_path, user="ann", admin=False, run_as="e2e-jobs").submit_data(SLEEPER)
    assert store.get_job(job_id).account == "alice"
    cli_job = _service(store, tmp_path, run_as="e2e-jobs").submit_data(SLEEPER)
    assert store.get_job(cli_job).account == "e2e-jobs"


def test_create_user_maps_an_existing_account_and_lists_it(store, monkeypatch):
    require_root()
    with pytest.raises(UserError, match="--os-user: 'root' is root"):
        accounts.create_user(store, "carl", os_user="root")
    with pytest.raises(UserError, match="OS account 'bob' exists already: map to it with --os-user bob"):
        accounts.create_user(store, "bob")
    assert store.users.list() == []
    assert accounts.create_user(store, "carl", os_user="bob").startswith("e2e_")
    assert [(r["name"], r["os_user"]) for r in store.users.list()] == [("carl", "bob")]


def test_the_account_is_resolved_once_and_cached(monkeypatch):
    calls = []
    real = identity.lookup
    monkeypatch.setattr(identity, "lookup", lambda name: calls.append(name) or real(name))
    identity._resolved.clear()
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert identity.account_for("") is None
    assert identity.account_for(me) is identity.account_for(me)
    assert calls == [me]


def test_as_account_drops_to_the_account_with_a_clean_environment():
    alice = identity.Account("alice", 1234, 1235, (7,), "/home/alice", "/bin/bash")
    argv = identity.as_account(alice, ["bash", "w.sh"], {"PATH": "/opt/bin"})
    if identity.multi_user():
        assert argv[:4] == ["setpriv", "--reuid=1234", "--regid=1235", "--groups=7"]
        assert "--bounding-set=-all" in argv and "--inh-caps=-all" in argv
    env = argv[argv.index("-i") + 1:argv.index("bash")]
    assert sorted(e.split("=")[0] for e in env) == ["HOME", "LANG", "LOGNAME", "PATH", "SHELL", "USER"]
    assert "PATH=/opt/bin" in env and not any("REDIS" in e for e in argv)


# -- files in a job's tree: never a symlink followed
def test_reads_below_the_state_folder_refuse_symlinks_and_fifos(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("engine only")
    run = tmp_path / "state" / "jobs" / "j1" / "runs" / "run-001"
    run.mkdir(parents=True)
    (run / "log").symlink_to(secret)
    os.mkfifo(run / "pid")
    (run / "ok").write_text("7\n")
    (tmp_path / "state" / "jobs" / "j2").symlink_to(run)  # a symlinked folder on the way
    state = tmp_path / "state"
    assert read_confined(state, run / "ok") == b"7\n"
    assert read_confined(state, run / "ok", 1) == b"\n"
    assert read_confined(state, run / "log") is None
    started = time.monotonic()
    assert read_confined(state, run / "pid") is None  # a FIFO would block an open() for ever
    assert time.monotonic() - started < 1
    assert read_confined(state, state / "jobs" / "j2" / "ok") is None
    assert read_confined(state, run / "missing") is None


def test_writes_below_the_state_folder_never_go_through_a_symlinked_folder(tmp_path):
    outside = tmp_path / "etc"
    outside.mkdir()
    state = tmp_path / "state"
    (state / "jobs" / "j1").mkdir(parents=True)
    (state / "jobs" / "j1" / "desktop").symlink_to(outside)
    with pytest.raises(OSError):
        write_confined(state, state / "jobs" / "j1" / "desktop" / "passwd", b"x", 0o600)
    assert list(outside.iterdir()) == []
    with pytest.raises(BackendError, match="symlink on the way"):
        LocalBackend(Settings(home=state)).make_dirs(None, state / "jobs" / "j1" / "desktop" / "home")  # type: ignore
    write_confined(state, state / "jobs" / "j1" / "stop", b"now", 0o644)
    assert (state / "jobs" / "j1" / "stop").read_bytes() == b"now"
    assert (state / "jobs" / "j1" / "stop").stat().st_mode & 0o777 == 0o644


def test_hand_over_chowns_the_tree_but_nothing_a_link_points_at(tmp_path):
    require_root()
    bob = identity.lookup("bob")
    outside = tmp_path / "shadow"
    outside.write_text("root's")
    tree = tmp_path / "state" / "jobs" / "j1"
    (tree / "runs").mkdir(parents=True)
    (tree / "runs" / "f").write_text("x")
    (tree / "runs" / "link").symlink_to(outside)
    (tree / "dirlink").symlink_to(tmp_path)
    hand_over_tree(tree, bob, tmp_path / "state")
    assert {os.stat(p, follow_symlinks=False).st_uid for p in (tree, tree / "runs", tree / "runs" / "f",
                                                               tree / "runs" / "link")} == {bob.uid}
    assert outside.stat().st_uid == 0 and tmp_path.stat().st_uid == 0
    root_owned = tmp_path / "state" / "jobs" / "j1-file"
    root_owned.write_text("x")
    write_confined(tmp_path / "state", tree / "stop", b"1", 0o644)  # later writes: the folder owner's
    assert (tree / "stop").stat().st_uid == bob.uid


# -- processes: only the account's are signalled
def _spawn(account: str | None, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    prefix = ["setpriv", f"--reuid={account}", f"--regid={account}", "--init-groups", "--"] if account else []
    return subprocess.Popen([*prefix, *argv], start_new_session=True, env={"PATH": identity.SAFE_PATH, **(env or {})})


def test_a_forged_pid_or_tag_never_gets_another_accounts_process_signalled(tmp_path):
    require_root()
    backend = LocalBackend(Settings(home=tmp_path))
    node = Node("node-01", "localhost", 1, tmp_path)
    alice, bob = identity.lookup("alice"), identity.lookup("bob")
    engine_group = _spawn(None, "sleep", "60")                      # the engine's own (root) process group
    bobs = _spawn("bob", "sleep", "60", env={"E2E_RUN_TAG": "ja/run-001"})  # bob forges alice's tag
    alices = _spawn("alice", "sleep", "60", env={"E2E_RUN_TAG": "ja/run-001"})
    try:
        deadline = time.monotonic() + 5
        while uid_of(bobs.pid) != bob.uid or uid_of(alices.pid) != alice.uid:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # alice's job wrote the engine's and bob's group into its pid file: nobody is signalled
        assert backend.signal_group(node, engine_group.pid, signal.SIGKILL, alice) is False
        assert backend.signal_group(node, bobs.pid, signal.SIGKILL, alice) is False
        assert backend.signal_tagged(node, "ja/run-001", signal.SIGKILL, alice) == 1
        alices.wait(5)
        time.sleep(0.05)
        assert engine_group.poll() is None and bobs.poll() is None
        assert backend.signal_group(node, bobs.pid, signal.SIGKILL, bob) is True
        bobs.wait(5)
    finally:
        for proc in (engine_group, bobs, alices):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def test_prepare_node_gives_the_job_folder_to_the_account_and_lets_others_only_pass(tmp_path):
    require_root()
    bob = identity.lookup("bob")
    state = tmp_path / "state"
    state.mkdir()
    backend = LocalBackend(Settings(home=state, local_nodes=1))
    node = backend.inventory()[0]
    backend.prepare_node(node, "j1", bob)
    job_dir = node.root / "jobs" / "j1"
    st = job_dir.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (bob.uid, bob.gid, 0o700)
    for folder in (state, state / "nodes", node.root, node.root / "jobs"):
        assert folder.stat().st_mode & 0o777 == 0o711, folder
    assert not Path(job_dir).is_symlink()


def test_single_user_mode_is_said_plainly_and_bad_names_change_nothing(store, monkeypatch):
    monkeypatch.setattr(identity, "multi_user", lambda: False)
    me = identity.current().name
    assert accounts.mode_notice() == f"single-user mode: every job runs as {me}; other users need a root engine"
    monkeypatch.setattr(identity, "multi_user", lambda: True)
    assert accounts.mode_notice() is None
    with pytest.raises(UserError, match="user name 'Bad Name'"):
        accounts.create_user(store, "Bad Name")
    assert store.users.list() == []


def test_get_me_shows_the_os_account(store, tmp_path):
    from fastapi.testclient import TestClient

    from orchestrator.api.app import create_app

    token = store.users.create("dora", os_user="bob")
    client = TestClient(create_app(Settings(home=tmp_path, redis_url="redis://127.0.0.1:1/0"), store))
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me == {"name": "dora", "admin": False, "os_user": "bob"}


def test_create_user_as_root_makes_a_locked_account_with_a_home(store):
    require_root()
    name = f"e2e-t{os.getpid() % 100000}"
    try:
        token = accounts.create_user(store, name)
        entry = pwd.getpwnam(name)
        assert entry.pw_uid != 0 and entry.pw_shell == "/bin/bash" and Path(entry.pw_dir).is_dir()
        shadow = next(ln for ln in Path("/etc/shadow").read_text().splitlines() if ln.startswith(f"{name}:"))
        assert shadow.split(":")[1].startswith("!"), "no password login: the account stays locked"
        assert store.users.get(name).os_user == name and store.users.authenticate(token).name == name
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True)
