"""The `e2e` command against the embedded stack: up, submit, watch, logs, ls, status, terminate, down, up again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.worker.stack import pid_alive

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
    home = tmp_path / "home"
    spec = tmp_path / "job.yaml"
    spec.write_text("name: counter\ndesktop: {enabled: false}\nsolver:\n  name: command\n"
                    "  command: [bash, -c, 'for i in 1 2 3; do echo \"progress: $i/3\"; sleep 0.3; done']\n")
    try:
        # Given the engine started from nothing but the pip-installed packages
        e2e(home, "up", "--detach")
        info = json.loads((home / "stack.json").read_text())
        assert info["embedded_redis"] and all(pid_alive(p) for p in info["pids"].values())
        assert (home / "redis" / "appendonlydir").is_dir(), "AOF persistence is not on"
        assert "requirepass" in (home / "redis" / "redis.conf").read_text()
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
