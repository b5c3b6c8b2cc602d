"""A parameter sweep through the CLI on the local backend: one job per value, each on its own node, all
complete; `e2e sweep status` shows them; `e2e terminate --sweep` ends them all with their results kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from orchestrator.model.states import JobState, RunState

from .conftest import Engine, make_settings, redis_flush

pytestmark = pytest.mark.integration

DB = "/14"


def e2e(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "E2E_HOME": str(settings.root), "E2E_REDIS_URL": settings.redis_url,
           "E2E_LOCAL_NODES": str(settings.local_nodes), "E2E_LOCAL_CORES_PER_NODE": "2"}
    env.pop("E2E_INVENTORY", None)
    return subprocess.run([sys.executable, "-m", "orchestrator.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_three_value_sweep_runs_one_job_per_value_and_terminates_as_one(redis_url, tmp_path):
    redis_flush(redis_url + DB)
    engine = Engine(make_settings(tmp_path / "home", redis_url + DB, local_nodes=3))
    try:
        spec = tmp_path / "scan.yaml"
        spec.write_text(yaml.safe_dump({
            "name": "scan", "cluster": {"nodes": 1}, "desktop": {"enabled": False},
            "limits": {"terminate_on_end": False},   # the members stay up until the sweep is terminated
            "solver": {"name": "command", "env": {"GAIN": "none"}, "command": [
                "sh", "-c", 'for i in 1 2 3; do sleep 0.2; echo "progress: $i/3"; done; '
                            'echo "gain=$GAIN node=$(cut -d" " -f1 "$E2E_HOSTFILE")" > out.txt']}}))
        # A bad value is refused naming the key and value, and creates nothing
        bad = e2e(engine.settings, "submit", str(spec), "--sweep", "cluster.nodes=1,0")
        assert bad.returncode == 2 and "cluster.nodes" in bad.stderr and "(value 0)" in bad.stderr, bad.stderr
        assert engine.client.jobs() == []

        # When a 3-value sweep is submitted and waited for
        done = e2e(engine.settings, "submit", str(spec), "--sweep", "env.GAIN=low,mid,high", "--wait", "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        sweep_id, jobs = result["sweep"], result["jobs"]
        assert len(jobs) == 3

        # Then every member completed, each on its own node, with its own value
        shown = e2e(engine.settings, "sweep", "status", sweep_id, "--json")
        assert shown.returncode == 0, shown.stderr
        members = json.loads(shown.stdout)["members"]
        assert [(m["name"], m["values"], m["run_state"]) for m in members] == [
            (f"scan-{i}", {"solver.env.GAIN": g}, "COMPLETED") for i, g in enumerate(("low", "mid", "high"), 1)]
        assert len({m["nodes"][0] for m in members}) == 3
        listed = e2e(engine.settings, "sweep", "ls", "--json")
        assert [(s["sweep"], s["members"], s["summary"]) for s in json.loads(listed.stdout)] == \
            [(sweep_id, 3, "3 COMPLETED")]

        # When the sweep is terminated, every member is, and each one's results hold its own value
        ended = e2e(engine.settings, "terminate", "--sweep", sweep_id, "--wait", "--json")
        assert ended.returncode == 0, ended.stderr
        assert {m["state"] for m in json.loads(ended.stdout)["members"]} == {"TERMINATED"}
        for job_id, gain in zip(jobs, ("low", "mid", "high"), strict=False):
            doc = engine.client.status(job_id)
            assert doc.state is JobState.TERMINATED and doc.runs_detail[0].state is RunState.COMPLETED
            out = (engine.settings.root / "results" / job_id / "runs" / "run-001" / "out.txt").read_text()
            assert out.startswith(f"gain={gain} "), out
        assert set(engine.client.store.leases("local").values()) == {""}
    finally:
        engine.close()


def test_members_beyond_the_pool_queue_and_start_as_earlier_members_free_their_nodes(redis_url, tmp_path):
    redis_flush(redis_url + "/15")
    engine = Engine(make_settings(tmp_path / "home", redis_url + "/15", local_nodes=2))
    try:
        spec = tmp_path / "scan.yaml"
        spec.write_text(yaml.safe_dump({
            "name": "pool", "desktop": {"enabled": False},   # members end with their runs (terminate_on_end)
            "sweep": {"env.K": ["a", "b", "c"]},
            "solver": {"name": "command", "command": ["sh", "-c", "sleep 0.5; echo $K > out.txt"]}}))
        sent = e2e(engine.settings, "submit", str(spec), "--json")
        assert sent.returncode == 0, sent.stderr
        jobs = json.loads(sent.stdout)["jobs"]
        docs = [engine.wait_job_terminal(job_id, timeout=120) for job_id in jobs]
        runs = [d.runs_detail[0] for d in docs]
        assert [r.state for r in runs] == [RunState.COMPLETED] * 3, runs
        assert [engine.client.store.get_job(j).terminated_by for j in jobs] == ["terminate_on_end"] * 3
        # the third waited for a node: it came up only after the run of one of the first two had ended (and that
        # job released its nodes: the release comes before its TERMINATED event, which CI once saw the third
        # job's up_at precede by 0.9 ms)
        assert docs[2].up_at >= min(d.runs_detail[0].ended_at for d in docs[:2])
        assert docs[2].up_at >= min(d.up_at for d in docs[:2]) + 0.5   # (each of the first runs sleeps 0.5 s)
        assert [(engine.settings.root / "results" / j / "runs" / "run-001" / "out.txt").read_text().strip()
                for j in jobs] == ["a", "b", "c"]
    finally:
        engine.close()
