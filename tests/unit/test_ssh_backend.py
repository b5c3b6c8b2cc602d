"""ssh backend pieces that need no node: inventory validation, quoting of hostile input, /proc parsing, host keys."""

from __future__ import annotations

import os
import shutil
import subprocess

import paramiko
import pytest

from orchestrator.cluster import get_backend
from orchestrator.cluster.base import Node
from orchestrator.cluster.hostkeys import HostKeyChanged, HostKeyUnknown, fingerprint, trust, verify
from orchestrator.cluster.inventory import InventoryError, load_inventory, parse_inventory
from orchestrator.cluster.ssh import SSHBackend, _find_tagged, parse_stat, q
from orchestrator.cluster.sshconn import Completed
from orchestrator.model.errors import BackendError, InfrastructureError
from orchestrator.model.settings import Settings

HOSTILE = ["a b", "$(touch /tmp/e2essh-unit-pwned)", "`id`", "'q'", '"dq"', "x;y", "new\nline", "*", "~",
           "-n", "back\\slash", "", "$HOME", "|&>", "ünï"]


def good(**overrides) -> dict:
    data = {"head": {"name": "head", "address": "10.0.0.1"},
            "nodes": [{"name": "n1", "address": "10.0.0.11", "key_file": "/keys/engine", "cores": 4},
                      {"name": "n2", "address": "node2.cluster", "port": 2222, "user": "hpc",
                       "key_file": "/keys/engine", "cores": 8, "shared_storage": False}]}
    data.update(overrides)
    return data


def problems(data) -> dict[str, str]:
    with pytest.raises(InventoryError) as caught:
        parse_inventory(data, "inv.yaml")
    return dict(caught.value.problems)


# -- inventory
def test_good_inventory_has_defaults_and_known_hosts_next_to_it(tmp_path):
    path = tmp_path / "inventory.yaml"
    import yaml

    path.write_text(yaml.safe_dump(good()))
    inv = load_inventory(path)
    assert [(n.name, n.port, n.user, n.shared_storage) for n in inv.nodes] == \
        [("n1", 22, "root", True), ("n2", 2222, "hpc", False)]
    assert inv.known_hosts == tmp_path / "known_hosts"


@pytest.mark.parametrize("node_field,value,message", [
    ("port", 70000, "less than or equal to 65535"),
    ("port", "ssh", "valid integer"),
    ("cores", 0, "greater than or equal to 1"),
    ("user", "root;rm", "should match pattern"),
    ("address", "-oProxyCommand=sh", "not a host name or IP address"),
    ("address", "a b", "not a host name or IP address"),
    ("key_file", "keys/engine", "must be an absolute path"),
    ("shared_storage", "perhaps", "valid boolean"),
    ("colour", "blue", "unknown field"),
])
def test_bad_node_field_is_named_with_the_node(node_field, value, message):
    data = good()
    data["nodes"][1][node_field] = value
    found = problems(data)
    assert list(found) == [f"nodes[1] (n2).{node_field}"]
    assert message in found[f"nodes[1] (n2).{node_field}"]


def test_missing_and_duplicate_fields_are_named():
    data = good()
    del data["nodes"][0]["key_file"]
    assert "nodes[0] (n1).key_file" in problems(data)
    assert "nodes" in problems(good(nodes=[]))
    dup = good()
    dup["nodes"][1]["name"] = "n1"
    assert "used twice" in " ".join(problems(dup).values())
    assert problems([1, 2]) == {"": "must be a mapping of fields, got list"}


def test_unreadable_or_broken_inventory_file_is_reported(tmp_path):
    with pytest.raises(InventoryError, match="cannot read it"):
        load_inventory(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("nodes: [\n")
    with pytest.raises(InventoryError, match="not valid YAML at line"):
        load_inventory(tmp_path / "bad.yaml")


def test_ssh_backend_needs_an_inventory(tmp_path, monkeypatch):
    monkeypatch.delenv("E2E_INVENTORY", raising=False)
    with pytest.raises(InfrastructureError, match="E2E_INVENTORY"):
        get_backend("ssh", Settings(home=tmp_path))
    monkeypatch.setenv("E2E_INVENTORY", str(tmp_path / "inv.yaml"))
    assert Settings(home=tmp_path).inventory == tmp_path / "inv.yaml"


# -- quoting: every value reaches the remote shell as one literal argument
def test_hostile_argv_survives_the_shell_verbatim():
    done = subprocess.run(["sh", "-c", q("printf", "%s\\0", *HOSTILE)], capture_output=True, check=True)
    assert done.stdout.decode().split("\0")[:-1] == HOSTILE
    assert not os.path.exists("/tmp/e2essh-unit-pwned")


def test_hostile_run_tag_is_matched_exactly_and_never_executed():
    tag = "job/$(touch /tmp/e2essh-unit-pwned)'\"; *"
    proc = subprocess.Popen(["sleep", "30"], env={**os.environ, "E2E_RUN_TAG": tag})
    decoy = subprocess.Popen(["sleep", "30"], env={**os.environ, "E2E_RUN_TAG": tag + "x"})
    try:
        script = _find_tagged(tag) + ' echo "$p"; done'
        found = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30).stdout.split()
        assert found == [str(proc.pid)]
        assert not os.path.exists("/tmp/e2essh-unit-pwned")
    finally:
        proc.kill(), decoy.kill(), proc.wait(), decoy.wait()


class FakeConn:
    """Records command lines; answers with the given Completed."""

    def __init__(self, answer: Completed) -> None:
        self.answer, self.commands = answer, []

    def run(self, command: str, timeout=None, stdin=None) -> Completed:
        self.commands.append(command)
        return self.answer


def backend_with(tmp_path, monkeypatch, answer: Completed) -> tuple[SSHBackend, FakeConn]:
    import yaml

    (tmp_path / "inv.yaml").write_text(yaml.safe_dump(good()))
    backend = SSHBackend(Settings(home=tmp_path, inventory=tmp_path / "inv.yaml"))
    fake = FakeConn(answer)
    monkeypatch.setattr("orchestrator.cluster.ssh.connection", lambda node, inv: fake)
    return backend, fake


def test_spawn_quotes_cwd_and_argv(tmp_path, monkeypatch):
    backend, fake = backend_with(tmp_path, monkeypatch, Completed(0, b"", b""))
    node = backend.inventory()[0]
    backend.spawn_detached(node, ["bash", "w; rm -rf /"], cwd=tmp_path / "a dir $(x)")
    command = fake.commands[0]
    assert command.startswith(f"cd '{tmp_path}/a dir $(x)' && exec setsid --fork bash 'w; rm -rf /'")


def test_signal_group_reports_a_missing_group_and_refuses_init(tmp_path, monkeypatch):
    backend, fake = backend_with(tmp_path, monkeypatch, Completed(1, b"", b"sh: 1: kill: No such process\n"))
    node = backend.inventory()[0]
    assert backend.signal_group(node, 4242, 15) is False
    assert fake.commands == ["kill -15 -- -4242"]
    with pytest.raises(BackendError, match="refusing"):
        backend.signal_group(node, 1, 9)
    fake.answer = Completed(1, b"", b"kill: Operation not permitted\n")
    with pytest.raises(BackendError, match="not permitted"):
        backend.signal_group(node, 4242, 15)


def test_unknown_node_is_a_clear_error(tmp_path, monkeypatch):
    backend, _ = backend_with(tmp_path, monkeypatch, Completed(0, b"", b""))
    with pytest.raises(BackendError, match="node ghost is not in the inventory"):
        backend.run(Node("ghost", "x", 1, tmp_path), ["true"])


def test_proc_stat_lines_with_hostile_command_names():
    data = (b"100 (bash) S 1 100 100 0\n"
            b"101 (evil) S 1 7 (x) R 1 100 100 0\n"  # a comm of "evil) S 1 7 (x"
            b"102 (z) Z 100 100 100 0\n"
            b"garbage\n")
    assert parse_stat(data) == [(100, "S", 100), (101, "R", 100), (102, "Z", 100)]


# -- host keys
@pytest.fixture
def keys(tmp_path):
    return [paramiko.Ed25519Key.from_private_key_file(_keygen(tmp_path, f"k{i}")) for i in range(2)]


def _keygen(tmp_path, name) -> str:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen (openssh-client)")
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return str(path)


def test_fingerprint_matches_ssh_keygen(tmp_path, keys):
    listed = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k0.pub")], capture_output=True, text=True,
                            check=True).stdout.split()[1]
    assert fingerprint(keys[0]) == listed


def test_verify_refuses_unknown_and_changed_keys_and_trust_needs_replace(tmp_path, keys):
    known = tmp_path / "known_hosts"
    with pytest.raises(HostKeyUnknown, match=r"node n1 \(\[10.0.0.11\]:2222\) is not trusted.*SHA256:"):
        verify(known, "n1", "10.0.0.11", 2222, keys[0])
    trust(known, "10.0.0.11", 2222, keys[0])
    assert known.read_text().startswith("[10.0.0.11]:2222 ssh-ed25519 ")
    verify(known, "n1", "10.0.0.11", 2222, keys[0])
    with pytest.raises(HostKeyChanged) as caught:
        verify(known, "n1", "10.0.0.11", 2222, keys[1])
    assert fingerprint(keys[0]) in caught.value.message and fingerprint(keys[1]) in caught.value.message
    with pytest.raises(HostKeyChanged, match="--replace"):
        trust(known, "10.0.0.11", 2222, keys[1])
    trust(known, "10.0.0.11", 2222, keys[1], replace=True)
    verify(known, "n1", "10.0.0.11", 2222, keys[1])
    with pytest.raises(HostKeyUnknown):  # port 22 is another entry than port 2222
        verify(known, "n1", "10.0.0.11", 22, keys[1])


# -- `e2e nodes` rows
def test_node_rows_show_leases_load_and_unreachable_nodes(tmp_path):
    from orchestrator.cluster.base import NodeUnreachable
    from orchestrator.engine.nodes_admin import node_rows

    class Pool(SSHBackend):
        def __init__(self):
            pass

        def inventory(self):
            return [Node("n1", "10.0.0.11", 4, tmp_path), Node("n2", "10.0.0.12", 8, tmp_path)]

        def load(self, node, timeout=None):
            if node.name == "n2":
                raise NodeUnreachable("node n2 (root@10.0.0.12:22) did not answer within 3s")
            return (0.5, 0.25, 0.125)

    rows = node_rows(Pool(), {"n1": "job-7", "n2": ""})
    assert [(r["name"], r["state"], r["job"], r["load"], r["reachable"]) for r in rows] == \
        [("n1", "leased", "job-7", 0.5, True), ("n2", "free", None, None, False)]
    assert "did not answer" in rows[1]["problem"]


class LocalSftp:
    """listdir_attr as paramiko's SFTP client answers it (lstat per entry), on this machine's files."""

    def listdir_attr(self, path: str):
        import paramiko

        return [paramiko.SFTPAttributes.from_stat(os.lstat(os.path.join(path, name)), name)
                for name in os.listdir(path)]


def test_list_files_walks_the_globs_over_sftp_without_following_symlinks(tmp_path, monkeypatch):
    # the run directory on the node: function-object tables, a symlinked folder and file, another file
    backend, fake = backend_with(tmp_path, monkeypatch, Completed(0, b"", b""))
    fake.sftp = LocalSftp
    run = tmp_path / "run"
    (run / "postProcessing" / "fc" / "0").mkdir(parents=True)
    (run / "postProcessing" / "fc" / "0" / "coefficient.dat").write_text("# Time Cd\n")
    (run / "postProcessing" / "probes" / "0").mkdir(parents=True)
    (run / "postProcessing" / "probes" / "0" / "p").write_text("")
    (tmp_path / "elsewhere" / "0").mkdir(parents=True)
    (tmp_path / "elsewhere" / "0" / "secret.dat").write_text("")
    (run / "postProcessing" / "linked").symlink_to(tmp_path / "elsewhere")
    (run / "postProcessing" / "fc" / "0" / "link.dat").symlink_to(tmp_path / "elsewhere" / "0" / "secret.dat")
    (run / "job.sta").write_text("")
    node = backend.inventory()[0]
    assert backend.list_files(node, run, ("postProcessing/*/*/*", "*.sta", "*.cvg")) == [
        "job.sta", "postProcessing/fc/0/coefficient.dat", "postProcessing/probes/0/p"]
    assert backend.list_files(node, run / "missing", ("*.sta",)) == []
