"""Alice's job on the ssh cluster, as a hostile user: from her node, and from bob's node where she logs in as
herself, it reaches nothing of bob's job (folders on the head and on his node, his processes, their
environment) and nothing of the engine's (stack file, keys, root logins, Redis, its environment)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

from orchestrator.cluster.identity import lookup
from orchestrator.cluster.ssh import SSHBackend
from orchestrator.model.paths import JobPaths
from tests.integration import probes

from ..conftest import Engine, make_settings, redis_flush, wait_for

pytestmark = pytest.mark.integration

DB = "/4"
# $1 bob's job folder (head, shared storage), $2 E2E_HOME, $3 stack.json, $4 bob's node's address,
# $5 bob's job folder on his node, $6 bob's run pid there, $7 the engine's ssh key, $8 the nodes' own key,
# $9 the head's address, $10 the Redis port.
CONTROLS = {"control": 'ls "$PWD"', "control-ssh": 'ssh "$4" true'}
ATTEMPTS = {
    "bob-dir": 'ls "$1"',
    "jobs-list": 'ls "$2/jobs"',
    "stack-json": 'cat "$3"',
    "bob-node-dir": 'ls "$5"',
    "bob-node-dir-there": 'ssh "$4" ls "$5"',
    "signal-bob-there": 'ssh "$4" kill -0 "$6"',
    "bob-environ-there": 'ssh "$4" cat /proc/"$6"/environ',
    "node-root-environ": 'cat /proc/1/environ',
    "engine-key": 'cat "$7"',
    "node-key": 'cat "$8"',
    "root-login": 'ssh -l root "$4" true',
    "redis-head": 'exec 3<>/dev/tcp/"$9"/"${10}"',
    "engine-env": 'env | grep -qi -e redis -e E2E_HOME -e E2E_RUN_AS',
}
PROBE = probes.script({**CONTROLS, **ATTEMPTS})


@pytest.fixture
def engine(ssh_cluster, redis_url, tmp_path):
    redis_flush(redis_url + DB)
    engine = Engine(make_settings(tmp_path / "home", redis_url + DB, inventory=ssh_cluster.inventory()))
    try:
        yield engine
    finally:
        engine.close()


def _running(client, job_id: str):
    return client.wait(job_id, lambda d: any(r.state.value == "RUNNING" and r.pid for r in d.runs_detail),
                       timeout=90, poll=0.1)


def test_alices_job_reaches_nothing_of_bobs_or_of_the_engines_from_any_node(engine, ssh_cluster, redis_url):
    users = probes.owners(engine, "alice", "bob")
    spec = {"desktop": {"enabled": False}, "cluster": {"backend": "ssh", "nodes": 1}}
    sleeper = {"name": "command", "command": ["sleep", "600"]}
    # bob's job has a desktop: the consumer its live sync runs for on shared storage (SyncService.wanted)
    bobs = users["bob"].submit_data({**spec, "desktop": {"enabled": True}, "name": "bobs", "solver": sleeper})
    try:
        doc = _running(engine.client, bobs)
        bob_pid = next(r.pid for r in doc.runs_detail if r.pid)
        backend = SSHBackend(engine.settings)
        bob_node = backend.spec(doc.nodes[0])
        node_dir = next(n for n in backend.inventory() if n.name == bob_node.name).root / "jobs" / bobs
        assert backend.exists(bob_node.name, node_dir)
        # every process of bob's job is his: the run's on his node, the sync process beside the engine
        bob = lookup("bob")
        tagged = wait_for(lambda: backend.tagged_processes(bob_node.name, f"{bobs}/run-001", bob), 30, "the solver")
        script = 'for p in "$@"; do printf "%s " "$p"; grep "^Uid:" /proc/$p/status; done'
        lines = backend.run(bob_node.name, ["sh", "-c", script, "sh", bob_pid, *tagged]).stdout.decode().splitlines()
        assert {line.split()[0]: line.split()[2:] for line in lines} == \
            {str(p): [str(bob.uid)] * 4 for p in [bob_pid, *tagged]}
        sync = JobPaths.for_job(engine.settings.root, bobs).sync.pid
        sync_pid = wait_for(lambda: sync.exists() and sync.read_text().strip(), 30, "the sync process")
        uid_line = next(ln for ln in Path(f"/proc/{sync_pid}/status").read_text().splitlines() if ln.startswith("Uid:"))
        assert uid_line.split()[1:] == [str(bob.uid)] * 4
        argv = ["bash", "-c", PROBE, "probe", JobPaths.for_job(engine.settings.root, bobs).root,
                engine.settings.root, engine.settings.stack_file, bob_node.address, node_dir, bob_pid,
                bob_node.key_file, ssh_cluster.base / "keys" / "node", backend.config.head.address,
                urlparse(redis_url).port]
        probe = users["alice"].submit_data({**spec, "name": "probe", "solver": {
            "name": "command", "command": [str(a) for a in argv]}})
        wait_for(lambda: engine.client.status(probe).runs_detail and
                 engine.client.status(probe).runs_detail[0].state.value == "COMPLETED", 120, "the probe to end")
        assert engine.client.status(probe).nodes != doc.nodes   # it ran on another node, and went to bob's
        out = (JobPaths.for_job(engine.settings.root, probe).root / "runs" / "run-001" / "output.log").read_text()
        probes.check(out, set(CONTROLS), set(ATTEMPTS))
        assert engine.client.status(bobs).runs_detail[0].state.value == "RUNNING"
        assert backend.run(bob_node.name, ["kill", "-0", bob_pid], check=False).returncode == 0
    finally:
        engine.client.terminate(bobs)
