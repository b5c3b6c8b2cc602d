"""The ssh backend against real sshd nodes: commands, detached processes, files, host keys, keys, node faults."""

from __future__ import annotations

import signal

import pytest

from orchestrator.cluster import sshconn
from orchestrator.cluster.base import NodeUnreachable
from orchestrator.cluster.hostkeys import HostKeyChanged, HostKeyUnknown, fingerprint
from orchestrator.cluster.sshconn import NodeAuthFailed
from orchestrator.cluster.transfer import pull_tree, push_tree

from ..conftest import wait_for
from .conftest import backend_for

pytestmark = pytest.mark.integration

HOSTILE = ["a b", "$(touch /tmp/e2essh-pwned)", "`id`", "'quoted'", '"dq"', "semi;colon", "new\nline",
           "star*", "~", "-n", "back\\slash", "", "$HOME", "|pipe&"]


def test_commands_round_trip_each_node_with_its_own_hostname(ssh_backend, ssh_cluster):
    names = [ssh_backend.run(node, ["cat", "/proc/sys/kernel/hostname"]).stdout.decode().strip()
             for node in ssh_backend.inventory()]
    if ssh_cluster.bridge:  # namespaces: each node is a host of its own
        assert names == ["nodea", "nodeb", "nodec"]
    assert len(names) == 3
    done = ssh_backend.run("nodeb", ["sh", "-c", "echo out; echo err >&2; exit 7"], check=False)
    assert (done.returncode, done.stdout, done.stderr) == (7, b"out\n", b"err\n")


def test_hostile_arguments_arrive_verbatim(ssh_backend):
    done = ssh_backend.run("nodea", ["printf", "%s\\0", *HOSTILE])
    assert done.stdout.split(b"\0")[:-1] == [a.encode() for a in HOSTILE]
    assert not ssh_backend.exists(ssh_backend.inventory()[0], __import__("pathlib").Path("/tmp/e2essh-pwned"))


def test_large_output_is_drained_while_waiting(ssh_backend):
    # 8 MiB is far beyond the channel window: without draining, the command could never exit.
    done = ssh_backend.run("nodea", ["head", "-c", str(8 << 20), "/dev/zero"])
    assert len(done.stdout) == 8 << 20


def test_spawn_detached_survives_its_channel_and_dies_by_group_signal(ssh_backend, tmp_path):
    node = ssh_backend.inventory()[1]
    script = tmp_path / "job.sh"
    script.write_text("echo $$ > pid\nexport E2E_RUN_TAG=j1/run-001\nsleep 300 &\nsleep 300\n")
    ssh_backend.spawn_detached(node, ["bash", str(script)], cwd=tmp_path)
    pgid = int(wait_for(lambda: ssh_backend.read_bytes(node, tmp_path / "pid"), 10, "pid file"))
    # the channel is closed and the connection dropped: the process group lives on
    sshconn.close_all()
    assert ssh_backend.group_alive(node, pgid)
    assert len(ssh_backend.group_members(node, pgid)) == 3  # bash and both sleeps
    assert len(wait_for(lambda: ssh_backend.tagged_processes(node, "j1/run-001"), 10, "tagged")) == 2
    assert ssh_backend.tagged_processes(node, "j1/run-0") == []  # exact match only
    assert ssh_backend.signal_group(node, pgid, signal.SIGTERM)
    wait_for(lambda: not ssh_backend.group_alive(node, pgid), 10, "the group to exit")
    assert ssh_backend.signal_group(node, pgid, signal.SIGTERM) is False
    assert ssh_backend.tagged_processes(node, "j1/run-001") == []


def test_signal_tagged_reaches_every_tagged_process(ssh_backend, tmp_path):
    node = ssh_backend.inventory()[2]
    ssh_backend.spawn_detached(node, ["env", "E2E_RUN_TAG=j2/run-002", "sh", "-c", "sleep 300 & sleep 300"],
                               cwd=tmp_path)
    wait_for(lambda: len(ssh_backend.tagged_processes(node, "j2/run-002")) == 3, 10, "3 tagged processes")
    assert ssh_backend.signal_tagged(node, "j2/run-002", signal.SIGKILL) == 3
    wait_for(lambda: not ssh_backend.tagged_processes(node, "j2/run-002"), 10, "tagged processes gone")


def test_files_read_write_atomic_and_missing(ssh_backend, tmp_path):
    node = ssh_backend.inventory()[0]
    target = tmp_path / "data.bin"
    payload = bytes(range(256)) * 4000
    ssh_backend.write_bytes(node, target, payload)
    assert target.read_bytes() == payload  # the head sees what the node wrote (shared storage)
    assert ssh_backend.read_bytes(node, target) == payload
    assert ssh_backend.read_bytes(node, target, 256, 10) == bytes(range(10))
    assert ssh_backend.read_bytes(node, tmp_path / "missing") is None
    assert ssh_backend.exists(node, target) and not ssh_backend.exists(node, tmp_path / "missing")
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]  # no temp file left behind
    with pytest.raises(Exception, match="No such file|not a directory|Permission"):
        ssh_backend.write_bytes(node, tmp_path / "no" / "dir" / "x", b"x")


@pytest.mark.parametrize("rsync", [True, False], ids=["rsync", "sftp"])
def test_directory_push_and_pull_merge(ssh_backend, tmp_path, monkeypatch, rsync):
    if not rsync:
        monkeypatch.setattr("orchestrator.cluster.transfer.rsync_usable", lambda *a: False)
    node = ssh_backend.inventory()[1]
    src = tmp_path / "src"
    (src / "processor1" / "0.5").mkdir(parents=True)
    (src / "processor1" / "0.5" / "U").write_text("field")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    push_tree(ssh_backend, node, src, tmp_path / "on-node")
    assert (tmp_path / "on-node" / "processor1" / "0.5" / "U").read_text() == "field"
    assert (tmp_path / "on-node" / "run.sh").stat().st_mode & 0o777 == 0o755
    back = tmp_path / "back"
    (back / "keep").mkdir(parents=True)
    pull_tree(ssh_backend, node, tmp_path / "on-node", back)
    assert sorted(p.name for p in back.iterdir()) == ["keep", "processor1", "run.sh"]


def test_unknown_host_key_is_refused_naming_node_and_fingerprint(ssh_cluster, tmp_path):
    backend = backend_for(ssh_cluster, tmp_path, known_hosts=str(tmp_path / "empty_known_hosts"))
    node = ssh_cluster.nodes[0]
    with pytest.raises(HostKeyUnknown) as caught:
        backend.run("nodea", ["true"])
    assert "nodea" in caught.value.message and fingerprint(node.host_key) in caught.value.message
    assert "e2e nodes trust nodea" in caught.value.message
    assert not (tmp_path / "empty_known_hosts").exists()  # never auto-added


def test_changed_host_key_is_refused_with_both_fingerprints(ssh_cluster, tmp_path):
    # known_hosts says nodea has nodeb's key: what an impersonated (or reinstalled) node looks like
    a, b = ssh_cluster.nodes[0], ssh_cluster.nodes[1]
    swapped = tmp_path / "swapped_known_hosts"
    swapped.write_text(ssh_cluster.known_hosts.read_text().replace(
        b.host_key.get_base64(), "PLACEHOLDER").replace(a.host_key.get_base64(), b.host_key.get_base64())
        .replace("PLACEHOLDER", a.host_key.get_base64()))
    backend = backend_for(ssh_cluster, tmp_path, known_hosts=str(swapped))
    with pytest.raises(HostKeyChanged) as caught:
        backend.run("nodea", ["true"])
    message = caught.value.message
    assert "HOST KEY CHANGED for node nodea" in message
    assert fingerprint(b.host_key) in message and fingerprint(a.host_key) in message


def test_wrong_user_key_is_refused(ssh_cluster, tmp_path):
    path = ssh_cluster.inventory(tmp_path / "inventory.yaml")
    path.write_text(path.read_text().replace(str(ssh_cluster.engine_key), str(ssh_cluster.stranger_key)))
    from orchestrator.cluster.ssh import SSHBackend
    from orchestrator.model.settings import Settings

    backend = SSHBackend(Settings(home=tmp_path, inventory=path))
    with pytest.raises(NodeAuthFailed, match=r"node nodeb .* refused the key .*stranger"):
        backend.run("nodeb", ["true"])
    assert backend.probe("nodeb", 5) is not None


def test_a_node_that_stops_answering_is_reported_by_probe(own_cluster, tmp_path):
    backend = backend_for(own_cluster, tmp_path)
    victim = own_cluster.nodes[2]
    assert backend.probe(victim.name, 5) is None  # connected and answering
    own_cluster.cut(victim)
    reason = wait_for(lambda: backend.probe(victim.name, 5), 15, "the probe to report the dead node")
    assert victim.name in reason
    assert backend.probe("nodea", 5) is None  # the others are unaffected


def test_a_command_past_its_deadline_is_abandoned_and_the_connection_still_works(ssh_backend):
    conn = ssh_backend.conn("nodec")
    with pytest.raises(NodeUnreachable, match="did not (finish 'sleep' in time|answer within 1s)"):
        conn.run("sleep 30", timeout=1)
    assert conn.run("echo still-here", timeout=5).stdout == b"still-here\n"
