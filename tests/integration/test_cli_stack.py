"""The `e2e` command against the embedded stack: up, submit, watch, logs, ls, status, terminate, down, up again."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import redis

from orchestrator.worker.stack import pid_alive
from tests.conftest import require

from .conftest import CAVITY

pytestmark = pytest.mark.integration
E2E = [str(Path(sys.executable).parent / "e2e")]


def e2e(home: Path, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "E2E_REDIS_URL")}
    env.update(E2E_HOME=str(home), E2E_RECONCILE_INTERVAL="0.3", E2E_LOCAL_CORES_PER_NODE="2")
    proc = subprocess.run([*E2E, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"e2e {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_embedded_stack_end_to_end_and_state_survives_a_restart(tmp_path):
    # a parent anyone may traverse (pytest's tmp_path is 0700), so only the engine's own modes keep a job out
    parent = Path(tempfile.mkdtemp(prefix="e2e-stack-"))
    parent.chmod(0o755)
    home = parent / "home"
    spec = tmp_path / "job.yaml"
    spec.write_text("name: counter\ndesktop: {enabled: false}\nsolver:\n  name: command\n"
                    "  command: [bash, -c, 'for i in 1 2 3; do echo \"progress: $i/3\"; sleep 0.3; done']\n")
    try:
        # Given the engine started from nothing but the pip-installed packages (under a permissive umask)
        old = os.umask(0o022)
        try:
            e2e(home, "up", "--detach")
        finally:
            os.umask(old)
        info = json.loads((home / "stack.json").read_text())
        assert info["embedded_redis"] and all(pid_alive(p) for p in info["pids"].values())
        assert (home / "redis" / "appendonlydir").is_dir(), "AOF persistence is not on"
        conf = (home / "redis" / "redis.conf").read_text()
        assert "aclfile" in conf and "requirepass" not in conf
        # When a job is submitted and followed
        done = e2e(home, "submit", str(spec), "--wait", "--json")
        doc = json.loads(done.stdout)
        job_id = doc["id"]
        # Then it completed with its progress
        run = doc["runs_detail"][0]
        assert run["state"] == "COMPLETED" and run["progress"]["step"] == 3.0
        assert "progress: 3/3" in e2e(home, "logs", job_id[:4]).stdout
        listed = json.loads(e2e(home, "ls", "--json").stdout)
        assert [j["id"] for j in listed] == [job_id]
        # and the engine's files, Redis and processes hold nothing a job's account could use
        check_engine_files_are_engine_only(home, parent)
        # and a job (red-team finding 1) finds no Redis credential and cannot speak to Redis without one
        check_a_job_cannot_reach_redis(home, tmp_path, info)
        # When the engine is stopped and started again
        e2e(home, "down")
        assert not any(pid_alive(p) for p in info["pids"].values())
        e2e(home, "up", "--detach")
        # Then the job is still there, and can be terminated
        status = json.loads(e2e(home, "status", job_id, "--json").stdout)
        assert status["state"] == "UP" and status["runs_detail"][0]["state"] == "COMPLETED"
        final = json.loads(e2e(home, "terminate", job_id, "--wait", "--json").stdout)
        assert final["state"] == "TERMINATED"
        assert (Path(final["results"]) / "runs" / "run-001" / "output.log").is_file()
    finally:
        e2e(home, "down", check=False)
        shutil.rmtree(parent, ignore_errors=True)


def test_user_errors_are_one_clear_message_without_traceback(tmp_path):
    home = tmp_path / "home"
    # no engine running: reading a job says how to start one
    proc = e2e(home, "status", "abc", check=False)
    assert proc.returncode == 3 and "e2e up" in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: 'has space'\nsolver: {name: nope}\ncluster: {nodes: 0}\n")
    proc = e2e(home, "submit", str(bad), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for needle in ("name", "solver.name", "cluster.nodes", "openfoam"):
        assert needle in proc.stderr
    assert not (home / "jobs").exists()


def test_render_writes_the_run_without_starting_anything(tmp_path, openfoam):
    import shutil

    shutil.copytree(CAVITY, tmp_path / "cavity")
    spec = tmp_path / "cavity.yaml"
    spec.write_text("name: cav\nsolver: {name: openfoam, application: icoFoam, case: ./cavity}\n"
                    "cluster: {nodes: 2, cores_per_node: 1}\n")
    out = tmp_path / "dry"
    e2e(tmp_path / "home", "render", str(spec), "--out", str(out))
    script = (out / "run.sh").read_text()
    assert "mpirun" in script and "-np 2" in script and "icoFoam -parallel" in script
    assert (out / "hostfile").read_text() == "localhost slots=2\n"
    assert "numberOfSubdomains 2" in (out / "system" / "decomposeParDict").read_text()
    meta = out / ".e2e" / "attempt-1"
    assert (meta / "wrapper.sh").is_file() and not (meta / "pid").exists()
    subprocess.run(["bash", "-n", str(out / "run.sh")], check=True)
    subprocess.run(["bash", "-n", str(meta / "wrapper.sh")], check=True)


JOB_ACCOUNT = "e2e-jobs"


def job_account() -> pwd.struct_passwd:
    """A plain (non-root) account standing for a job's owner; made here when missing (needs root)."""
    require(os.geteuid() == 0 and shutil.which("setpriv") is not None, "root and setpriv (to act as a job's account)")
    try:
        return pwd.getpwnam(JOB_ACCOUNT)
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/bin/bash", JOB_ACCOUNT], check=True, capture_output=True)
        return pwd.getpwnam(JOB_ACCOUNT)


def as_job(account: pwd.struct_passwd, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups",
                           *argv], capture_output=True, text=True, timeout=30)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_engine_files_are_engine_only(home: Path, parent: Path) -> None:
    """E2E_HOME may be traversed but not listed; everything of the engine is its own only; a job's account
    reads none of it; Redis wants a role's credential; no engine process holds a Redis password."""
    account = job_account()
    info = json.loads((home / "stack.json").read_text())
    assert mode(home) == 0o711
    assert mode(home / "stack.json") == 0o600
    for folder in ("redis", "logs", "run"):
        assert mode(home / folder) == 0o700, folder
        for path in (home / folder).rglob("*"):
            assert mode(path) == (0o700 if path.is_dir() else 0o600), f"{path} is {oct(mode(path))}"
    aof = next((home / "redis" / "appendonlydir").iterdir())
    for name in ("users.acl", "redis.conf", "passwords.json", "redis.log"):
        assert (home / "redis" / name).is_file(), name
    # a job's account reads none of it (a control: it reads a world-readable file beside E2E_HOME)
    (parent / "public").write_text("anyone")
    control = as_job(account, "cat", str(parent / "public"))
    assert control.stdout == "anyone", control.stderr
    for secret in (home / "stack.json", home / "redis" / "users.acl", home / "redis" / "redis.conf",
                   home / "redis" / "passwords.json", aof):
        denied = as_job(account, "cat", str(secret))
        assert denied.returncode != 0 and "Permission denied" in denied.stderr, secret
    assert as_job(account, "ls", str(home)).returncode != 0  # 0711: not listable
    # Redis refuses a connection without a credential; each role has its own URL; the API's cannot flush
    assert {"admin", "api", "worker", "beat"} <= set(info["redis_urls"])
    port = int(info["redis_urls"]["api"].rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, socket_timeout=5, retry=None).get("e2e:jobs")
    with pytest.raises(redis.exceptions.NoPermissionError):
        redis.Redis.from_url(info["redis_urls"]["api"], socket_timeout=5).flushall()
    # and no engine process holds a password in its environment or on its command line
    passwords = json.loads((home / "redis" / "passwords.json").read_text()).values()
    for name, pid in info["pids"].items():
        seen = Path(f"/proc/{pid}/environ").read_bytes() + Path(f"/proc/{pid}/cmdline").read_bytes()
        assert not any(p.encode() in seen for p in passwords), f"{name} holds a Redis password"
        assert b"E2E_REDIS_URL" not in seen


def check_a_job_cannot_reach_redis(home: Path, tmp_path: Path, info: dict) -> None:
    """Finding 1 replayed by a job of the real stack: it looks for a Redis URL in its environment, reads the
    stack file and an engine process's environment, then speaks raw RESP to Redis to make a user admin."""
    port = int(info["redis_urls"]["api"].rsplit(":", 1)[1].split("/")[0])
    engine_pid = next(iter(info["pids"].values()))
    script = (f"echo envhits=$(env | grep -ci redis); "
              f"cat {home}/stack.json >/dev/null 2>&1 && echo stack=read || echo stack=denied; "
              f"cat /proc/{engine_pid}/environ >/dev/null 2>&1 && echo environ=read || echo environ=denied; "
              f"exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'HSET e2e:account:mallory admin 1\\r\\n' >&3 && "
              f"read -r -t 5 reply <&3; echo \"redis=$reply\"")
    spec = tmp_path / "attack.yaml"
    spec.write_text(json.dumps({"name": "attack", "desktop": {"enabled": False},
                                "solver": {"name": "command", "command": ["bash", "-c", script]}}))
    job = json.loads(e2e(home, "submit", str(spec), "--wait", "--json").stdout)
    log = e2e(home, "logs", job["id"]).stdout
    assert "envhits=0" in log and "stack=denied" in log and "environ=denied" in log, log
    assert "redis=-NOAUTH" in log, log
    admin = redis.Redis.from_url(info["redis_urls"]["admin"], socket_timeout=5)
    assert not admin.exists("e2e:account:mallory")
    e2e(home, "terminate", job["id"], "--wait")
