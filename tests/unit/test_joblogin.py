"""A job's own node login (orchestrator/cluster/joblogin.py): the authorized_keys edit keeps every other line and
every other job's, the files it leaves for the job are private, and the key is restricted to the head."""

from __future__ import annotations

import os
import subprocess

import paramiko
import pytest
import yaml

from orchestrator.cluster import joblogin
from orchestrator.cluster.hostkeys import trust
from orchestrator.cluster.inventory import load_inventory
from orchestrator.cluster.ssh import SSHBackend
from orchestrator.cluster.sshconn import Completed
from orchestrator.model.errors import BackendError
from orchestrator.model.identity import Account
from orchestrator.model.settings import Settings
from tests.unit.test_ssh_backend import backend_with, good

ME = Account("me", os.geteuid(), os.getegid(), (), "/nonexistent", "/bin/sh")


def edit(path, tag: str, line: str) -> None:
    subprocess.run(["sh", "-c", joblogin._EDIT, "sh", str(path), joblogin.marker(tag), line], check=True)


def test_the_edit_adds_replaces_and_removes_only_its_own_jobs_line(tmp_path):
    keys = tmp_path / "home" / ".ssh" / "authorized_keys"
    edit(keys, "job1", f"restrict ssh-ed25519 AAAA1 {joblogin.marker('job1')}")   # the folder is made
    assert keys.read_text().splitlines() == [f"restrict ssh-ed25519 AAAA1 {joblogin.marker('job1')}"]
    keys.write_text("ssh-ed25519 MINE person@laptop\n" + keys.read_text())
    edit(keys, "job2", f"restrict ssh-ed25519 AAAA2 {joblogin.marker('job2')}")
    edit(keys, "job1", f"restrict ssh-ed25519 AAAA3 {joblogin.marker('job1')}")   # a second start replaces it
    assert keys.read_text().splitlines() == ["ssh-ed25519 MINE person@laptop",
                                             f"restrict ssh-ed25519 AAAA2 {joblogin.marker('job2')}",
                                             f"restrict ssh-ed25519 AAAA3 {joblogin.marker('job1')}"]
    edit(keys, "job1", "")
    edit(keys, "job3", "")   # nothing of job3's: nothing changes
    assert keys.read_text().splitlines() == ["ssh-ed25519 MINE person@laptop",
                                             f"restrict ssh-ed25519 AAAA2 {joblogin.marker('job2')}"]
    assert keys.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in keys.parent.iterdir() if "e2e-tmp" in p.name] == []


def test_grant_leaves_a_private_key_known_hosts_and_inventory_of_the_account_and_authorises_it(tmp_path, monkeypatch):
    backend, _ = backend_with(tmp_path, monkeypatch, Completed(0, b"", b""))
    node = backend.inventory()[0]
    spec = backend.spec(node)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hostkey")], check=True)
    trust(backend.config.known_hosts, spec.address, spec.port, paramiko.Ed25519Key(filename=str(tmp_path / "hostkey")))
    lines: list[tuple[str, str]] = []
    monkeypatch.setattr(joblogin, "_edit", lambda b, n, a, tag, line: lines.append((tag, line)))
    folder = tmp_path / "sync"
    folder.mkdir()
    inventory = joblogin.grant(backend, node, ME, "job-1", folder)
    for name in (joblogin.KEY_FILE, joblogin.KNOWN_HOSTS, joblogin.INVENTORY):
        assert (folder / name).stat().st_mode & 0o777 == 0o600
    loaded = load_inventory(inventory)
    assert [(n.name, n.user, n.key_file) for n in loaded.nodes] == [("n1", "me", folder / joblogin.KEY_FILE)]
    assert loaded.known_hosts == folder / joblogin.KNOWN_HOSTS
    private = paramiko.Ed25519Key(filename=str(folder / joblogin.KEY_FILE))
    tag, line = lines[0]
    assert tag == "job-1" and line.split()[:3] == ['restrict,from="10.0.0.1"', "ssh-ed25519", private.get_base64()]
    assert line.endswith(joblogin.marker("job-1"))
    assert yaml.safe_load((folder / joblogin.INVENTORY).read_text())["head"] == good()["head"]


def test_a_head_known_by_name_gets_no_from_option_and_odd_tags_or_untrusted_nodes_are_refused(tmp_path, monkeypatch):
    backend, _ = backend_with(tmp_path, monkeypatch, Completed(0, b"", b""))
    node = backend.inventory()[0]
    assert joblogin._options(backend) == 'restrict,from="10.0.0.1"'
    (tmp_path / "named.yaml").write_text(yaml.safe_dump(good(head={"name": "head", "address": "head.cluster"})))
    assert joblogin._options(SSHBackend(Settings(home=tmp_path, inventory=tmp_path / "named.yaml"))) == "restrict"
    with pytest.raises(BackendError, match="not a job tag"):
        joblogin.grant(backend, node, ME, "x y", tmp_path)
    with pytest.raises(BackendError, match="no trusted host key"):
        joblogin.grant(backend, node, ME, "job-1", tmp_path)
