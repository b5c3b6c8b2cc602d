"""The engine on the ssh backend: OpenFOAM decomposed over 2 sshd nodes (mpirun over ssh), `e2e nodes`, trust."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from orchestrator.cluster.hostkeys import fingerprint
from orchestrator.model.states import JobState, RunState

from ..conftest import CAVITY, Engine, make_settings, redis_flush, wait_for
from .conftest import backend_for

pytestmark = pytest.mark.integration

DB = "/7"  # this module's own Redis database


def _spec(name, case, backend, nodes, **params):
    return {"name": name, "solver": {"name": "openfoam", "application": "icoFoam", "case": str(case),
                                     "parameters": params},
            "desktop": {"enabled": False}, "cluster": {"backend": backend, "nodes": nodes, "cores_per_node": 1}}


def internal_field(path) -> list[float]:
    """Every number of an ASCII OpenFOAM field's internalField list."""
    text = path.read_text()
    body = text[text.index("internalField"):]
    body = body[body.index("(") + 1:body.index("boundaryField")]
    return [float(x) for x in re.findall(r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?", body)]


@pytest.fixture(scope="module")
def ssh_engine(ssh_cluster, redis_url, tmp_path_factory):
    redis_flush(redis_url + DB)
    home = tmp_path_factory.mktemp("e2e-ssh-home")
    engine = Engine(make_settings(home, redis_url + DB, inventory=ssh_cluster.inventory()))
    try:
        yield engine
    finally:
        engine.close()


def e2e(settings, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "E2E_HOME": str(settings.root), "E2E_REDIS_URL": settings.redis_url,
           "E2E_INVENTORY": str(settings.inventory)}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_openfoam_over_two_ssh_nodes_matches_a_single_node_run(ssh_engine, ssh_cluster, openfoam, tmp_path):
    shutil.copytree(CAVITY, tmp_path / "cavity")
    client = ssh_engine.client
    # When the cavity runs decomposed over two ssh nodes
    job_id = client.submit_data(_spec("cavity-ssh", tmp_path / "cavity", "ssh", 2, endTime=0.5, writeInterval=20))
    doc = ssh_engine.wait_run(job_id, timeout=180)
    run = doc.runs_detail[0]
    assert run.state is RunState.COMPLETED, run
    assert doc.nodes == ["nodea", "nodeb"]
    run_dir = ssh_engine.settings.root / "jobs" / job_id / "runs" / "run-001"
    assert (run_dir / "processor0").is_dir() and (run_dir / "processor1").is_dir()
    hostfile = (run_dir / "hostfile").read_text()
    assert [line.split()[0] for line in hostfile.splitlines()] == [n.address for n in ssh_cluster.nodes[:2]]
    if ssh_cluster.bridge:  # distinct hostnames: the log names the ranks' hosts
        log = (run_dir / "log.icoFoam").read_text()
        assert re.search(r"^Host\s*:\s*\"?nodea", log, re.M) and "nodeb" in log, log[:2000]

    # Then `e2e nodes` shows both nodes leased to the job, the third free, all reachable with a load
    shown = e2e(ssh_engine.settings, "nodes", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = {r["name"]: r for r in json.loads(shown.stdout)}
    assert [(rows[n]["state"], rows[n]["job"]) for n in ("nodea", "nodeb", "nodec")] == \
        [("leased", job_id), ("leased", job_id), ("free", None)]
    assert all(r["reachable"] and r["load"] >= 0 for r in rows.values())

    # When it is terminated, the results reach the head node and the nodes are free again
    client.terminate(job_id)
    assert ssh_engine.wait_job_terminal(job_id, timeout=120).state is JobState.TERMINATED
    results = ssh_engine.settings.root / "results" / job_id / "runs" / "run-001"
    assert not any(client.store.leases("ssh").values())

    # And the fields match a single-node (serial) run of the same case on the local backend
    local_job = client.submit_data(_spec("cavity-local", tmp_path / "cavity", "local", 1, endTime=0.5,
                                         writeInterval=20))
    local_doc = ssh_engine.wait_run(local_job, timeout=180)
    assert local_doc.runs_detail[0].state is RunState.COMPLETED
    local = ssh_engine.settings.root / "jobs" / local_job / "runs" / "run-001"
    for name in ("U", "p"):
        distributed, serial = internal_field(results / "0.5" / name), internal_field(local / "0.5" / name)
        assert len(distributed) == len(serial) > 100
        scale = max(abs(v) for v in serial)
        assert max(abs(a - b) for a, b in zip(distributed, serial, strict=False)) <= 1e-4 * scale, name
    client.terminate(local_job)
    ssh_engine.wait_job_terminal(local_job, timeout=60)


def test_nodes_trust_shows_the_fingerprint_and_adds_the_key(ssh_cluster, tmp_path):
    inventory = ssh_cluster.inventory(tmp_path / "inventory.yaml", known_hosts=str(tmp_path / "known_hosts"))
    settings = make_settings(tmp_path / "home", "redis://127.0.0.1:1/0", inventory=inventory)
    expected = fingerprint(ssh_cluster.nodes[1].host_key)
    # an unknown node is refused, and nothing is trusted by asking
    backend = backend_for(ssh_cluster, tmp_path, known_hosts=str(tmp_path / "known_hosts"))
    assert "not trusted" in backend.probe("nodeb", 5)
    declined = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "nodes", "trust", "nodeb"],
                              input="n\n", capture_output=True, text=True, timeout=60,
                              env={**os.environ, "E2E_HOME": str(settings.root), "E2E_INVENTORY": str(inventory)})
    assert declined.returncode == 2 and expected in declined.stdout
    assert not (tmp_path / "known_hosts").exists()
    # trusting shows the same fingerprint the node's key file has, and then the node is usable
    done = e2e(settings, "nodes", "trust", "nodeb", "--yes")
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
    assert backend.probe("nodeb", 5) is None
    # a node presenting another key than the trusted one is not silently re-trusted
    (tmp_path / "known_hosts").write_text((tmp_path / "known_hosts").read_text().replace(
        ssh_cluster.nodes[1].host_key.get_base64(), ssh_cluster.nodes[0].host_key.get_base64()))
    refused = e2e(settings, "nodes", "trust", "nodeb", "--yes")
    assert refused.returncode == 2 and "--replace" in refused.stderr
    assert e2e(settings, "nodes", "trust", "nodeb", "--yes", "--replace").returncode == 0
    assert backend.probe("nodeb", 5) is None


def _proc_states(backend, node, tag) -> list[str]:
    """The /proc state letter of each process of the run on the node (T: stopped)."""
    pids = backend.tagged_processes(node, tag)
    if not pids:
        return []
    stats = backend.run(node, ["cat", *[f"/proc/{p}/stat" for p in pids]], check=False).stdout.decode()
    return [line[line.rfind(")") + 2] for line in stats.splitlines() if ")" in line]


def test_two_node_run_freezes_pauses_restarts_and_completes_like_a_serial_run(
        ssh_engine, ssh_cluster, openfoam, tmp_path):
    shutil.copytree(CAVITY, tmp_path / "cavity")
    client = ssh_engine.client
    backend = backend_for(ssh_cluster, tmp_path)
    nodea, nodeb = backend.inventory()[:2]
    job_id = client.submit_data(_spec("cavity-long", tmp_path / "cavity", "ssh", 2, endTime=10, writeInterval=20))
    tag = f"{job_id}/run-001"

    def step():
        progress = client.status(job_id).runs_detail[0].progress
        return progress.step if progress and progress.step is not None else 0.0

    wait_for(lambda: step() >= 0.5, 120, "progress past t=0.5")
    # freeze: every process of the run is stopped on both nodes (the ranks on nodeb found by their tag)
    client.pause(job_id, freeze=True)
    wait_for(lambda: _proc_states(backend, nodeb, tag) and set(_proc_states(backend, nodeb, tag)) == {"T"},
             30, "the rank on nodeb to be stopped")
    wait_for(lambda: set(_proc_states(backend, nodea, tag)) == {"T"}, 30, "the processes on nodea to be stopped")
    client.resume(job_id)
    wait_for(lambda: "T" not in _proc_states(backend, nodeb, tag) + _proc_states(backend, nodea, tag), 30,
             "every process to run again")
    # graceful pause: the solver writes its time and exits; restart continues from that checkpoint
    client.pause(job_id)
    doc = wait_for(lambda: (d := client.status(job_id)).runs_detail[0].state is RunState.PAUSED and d,
                   120, "the run to pause")
    paused_at = step()
    assert 0.5 <= paused_at < 10
    assert backend.tagged_processes(nodeb, tag) == [] and backend.tagged_processes(nodea, tag) == []
    client.restart(job_id)
    doc = ssh_engine.wait_run(job_id, timeout=300)
    run = doc.runs_detail[0]
    assert run.state is RunState.COMPLETED, (run.reason, run.exit_code, run.log_file)
    assert run.attempt == 2
    run_dir = ssh_engine.settings.root / "jobs" / job_id / "runs" / "run-001"
    log = (run_dir / "log.icoFoam").read_text()
    attempts = log.split("Starting time loop")[1:]  # the restart appends its attempt to the log
    assert len(attempts) == 2 and "nodeb" in log
    resumed_from = float(re.search(r"^Time = (\S+)$", attempts[1], re.M).group(1))
    assert resumed_from >= 0.5, "the restart began at t=0 again"
    client.terminate(job_id)
    assert ssh_engine.wait_job_terminal(job_id, timeout=120).state is JobState.TERMINATED
    results = ssh_engine.settings.root / "results" / job_id / "runs" / "run-001"

    serial = client.submit_data(_spec("cavity-serial", tmp_path / "cavity", "local", 1, endTime=10, writeInterval=20))
    assert ssh_engine.wait_run(serial, timeout=300).runs_detail[0].state is RunState.COMPLETED
    local = ssh_engine.settings.root / "jobs" / serial / "runs" / "run-001"
    for name in ("U", "p"):
        distributed, reference = internal_field(results / "10" / name), internal_field(local / "10" / name)
        assert len(distributed) == len(reference) > 100
        scale = max(abs(v) for v in reference)
        assert max(abs(a - b) for a, b in zip(distributed, reference, strict=False)) <= 1e-4 * scale, name
    client.terminate(serial)
    ssh_engine.wait_job_terminal(serial, timeout=60)


def test_jobs_wait_for_free_ssh_nodes_in_submission_order(ssh_engine):
    client = ssh_engine.client

    def sleeper(name, nodes):
        return client.submit_data({"name": name, "desktop": {"enabled": False}, "cluster": {"backend": "ssh",
                                                                                            "nodes": nodes},
                                   "solver": {"name": "command", "command": ["sleep", "600"]}})

    def state(job_id):
        return client.status(job_id).state

    first = sleeper("first", 2)
    wait_for(lambda: state(first) is JobState.UP, 60, "the first job to be up")
    second, third = sleeper("second", 2), sleeper("third", 1)  # 1 node is free: enough for third, not second
    wait_for(lambda: client.store.leases("ssh") and state(second) is JobState.QUEUED, 10, "second queued")
    time.sleep(5 * ssh_engine.settings.reconcile_interval)  # several reconcile passes could have placed it
    assert state(third) is JobState.QUEUED  # first in, first out: third may not overtake second
    client.terminate(first)
    wait_for(lambda: state(second) is JobState.UP, 60, "the second job to get the freed nodes")
    wait_for(lambda: state(third) is JobState.UP, 60, "the third job to get the last node")
    held = client.store.leases("ssh")
    assert sorted(held.values()) == sorted([second, second, third])
    for job_id in (second, third):
        client.terminate(job_id)
    for job_id in (first, second, third):
        assert ssh_engine.wait_job_terminal(job_id, timeout=60).state is JobState.TERMINATED
