"""Access, part 2: the ssh backend refuses a node whose host key is unknown or changed, through a real submit on a
real sshd node (tests/integration/sshcluster.py), records the refusal on the job, and keeps the spec's licence
key out of events and logs. The control: the same job with the node's real key trusted runs to completion.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from orchestrator.cluster import sshconn
from orchestrator.cluster.hostkeys import fingerprint
from orchestrator.model.events import EventKind
from orchestrator.model.paths import JobPaths
from orchestrator.model.states import JobState
from tests.integration.conftest import Engine, make_settings, redis_flush, redis_url  # noqa: F401 (fixture)
from tests.integration.ssh.conftest import _cluster
from tests.resilience import record

pytestmark = pytest.mark.integration
DB = "/12"  # this module's own Redis database
LICENCE = "1055@licence-SECRET-90aa"


@pytest.fixture(scope="module")
def ssh_engine(redis_url, tmp_path_factory):  # noqa: F811
    cluster = _cluster(tmp_path_factory.mktemp("access-sshcluster"))
    cluster_known = cluster.known_hosts.read_text()
    known = tmp_path_factory.mktemp("access-known") / "known_hosts"
    redis_flush(redis_url + DB)
    engine = None
    try:
        inventory = cluster.inventory(known_hosts=str(known), nodes=cluster.nodes[:1])
        engine = Engine(make_settings(tmp_path_factory.mktemp("e2e-access-ssh"), redis_url + DB,
                                      inventory=inventory))
        yield engine, cluster, known, cluster_known
    finally:
        if engine is not None:
            engine.close()
        sshconn.close_all()
        cluster.stop()


def _submit(engine, name: str, case) -> str:
    return engine.client.submit_data({"name": name, "desktop": {"enabled": False},
                                      "cluster": {"backend": "ssh", "nodes": 1},
                                      "solver": {"name": "fluent", "case": str(case), "license_file": LICENCE}})


def test_unknown_and_changed_host_keys_are_refused_recorded_and_secrets_kept(ssh_engine, tmp_path):
    engine, cluster, known, cluster_known = ssh_engine
    client = engine.client
    node = cluster.nodes[0]
    (tmp_path / "in.cas.h5").write_text("case")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "imposter")], check=True)
    imposter = " ".join((tmp_path / "imposter.pub").read_text().split()[:2])
    entry = f"[{node.address}]:{node.port}" if node.port != 22 else node.address
    results, jobs = {}, []
    for label, known_text, reason in (("unknown host key", "", "unknown SSH host key"),
                                      ("changed host key", f"{entry} {imposter}\n", "changed SSH host key")):
        known.write_text(known_text)
        sshconn.close_all()
        job_id = _submit(engine, label.replace(" ", "-"), tmp_path / "in.cas.h5")
        jobs.append(job_id)
        doc = client.wait(job_id, lambda d: d.state in (JobState.FAILED, JobState.UP), timeout=60)
        refusal = next((e.data for e in client.events(job_id) if e.kind is EventKind.ACCESS_REFUSED), None)
        results[label] = (doc.state is JobState.FAILED and refusal is not None and refusal["reason"] == reason
                          and fingerprint(node.host_key) in refusal["message"])
        assert known.read_text() == known_text, "the engine changed known_hosts on its own"

    # the control: the node's real key trusted, the same submit gets its node (the refusals were about the key)
    known.write_text(cluster_known)
    sshconn.close_all()
    job_id = _submit(engine, "trusted", tmp_path / "in.cas.h5")
    jobs.append(job_id)
    doc = client.wait(job_id, lambda d: d.state in (JobState.FAILED, JobState.UP), timeout=60)
    control_ok = doc.state is JobState.UP
    client.terminate(job_id)
    try:
        engine.wait_job_terminal(job_id, timeout=120)
    except TimeoutError:
        raise AssertionError([(e.kind, e.data) for e in client.events(job_id)][-15:]) from None

    leaks = []
    for job in jobs:
        text = json.dumps([e.model_dump() for e in client.events(job)], default=str)
        text += json.dumps(client.status(job), default=str)
        job_dir = JobPaths.for_job(engine.settings.root, job)
        files = [p for p in [*job_dir.root.rglob("*"), *(engine.settings.root / "logs").glob("*")]
                 if p.is_file() and p.name != "wrapper.sh"]
        leaks += [f"{job}: {p}" for p in files if LICENCE in p.read_text(errors="replace")]
        if LICENCE in text:
            leaks.append(f"{job}: events or status")
    record("access: ssh host keys", 2, sum(results.values()),
           f"{sum(results.values())}/2 host-key refusals recorded as events (unknown, changed); "
           f"trusted control {'ran' if control_ok else 'FAILED'}; {len(leaks)} licence-key leaks",
           refusals=results, leaks=leaks)
    assert all(results.values()), results
    assert control_ok, [(e.kind, e.data) for e in client.events(job_id)]
    assert not leaks, leaks
