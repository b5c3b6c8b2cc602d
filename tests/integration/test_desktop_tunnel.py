"""The SSH tunnel to a desktop through a real sshd that reads the head node's authorized_keys (as installed by
the engine): the key works from inside the job's networks, sshd refuses it from outside, and a VNC login
passes through the paramiko tunnel. (The ssh backend's own cluster is not used here: it is built elsewhere.)"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from orchestrator.cluster.tunnel import Forwarder, connect
from orchestrator.desktop import connect as desktop_connect
from orchestrator.desktop.keys import KeyRegistry
from orchestrator.desktop.rfb import authenticate
from orchestrator.model.errors import BackendError
from orchestrator.worker.stack import free_port
from tests.conftest import require
from tests.integration.conftest import wait_for
from tests.integration.desktop_helpers import require_desktop_tools, spec, wait_desktop

pytestmark = pytest.mark.integration


def _sshd(folder: Path, authorized_keys: Path) -> tuple[subprocess.Popen, int, Path]:
    """A private sshd on 127.0.0.1 whose only authorized_keys is the head node's; (process, port, known_hosts)."""
    require(Path("/usr/sbin/sshd").exists() and shutil.which("ssh-keygen"), "sshd (apt-get install openssh-server)")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "host")], check=True)
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host'}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized_keys}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
        "AllowTcpForwarding yes\nLogLevel VERBOSE\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(folder / "sshd_config"), "-E", str(folder / "log")])
    wait_for(lambda: _listening(port), 10, "sshd")
    known = folder / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(folder / 'host.pub').read_text().split(' ')[0]} "
                     f"{(folder / 'host.pub').read_text().split(' ')[1]}\n")
    return proc, port, known


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _from(source: str, port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def test_tunnel_reaches_the_display_from_inside_the_rules_only(engine, tmp_path):
    require_desktop_tools()
    require(shutil.which("ssh-keygen") is not None, "ssh-keygen (apt-get install openssh-client)")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "me")], check=True)
    registry = KeyRegistry(engine.client.store)
    fingerprint = registry.add(engine.client.user, (tmp_path / "me.pub").read_text()).fingerprint
    job_id = engine.client.submit_data(spec("desk-tunnel", access=["127.0.0.2/32"]))
    sshd = None
    try:
        assert wait_desktop(engine, job_id).state == "ready"
        d = desktop_connect.desktop(engine.client, job_id)
        node = engine.client.job(job_id).nodes[0]
        authorized = engine.settings.root / "nodes" / node / "home" / ".ssh" / "authorized_keys"
        sshd, port, known = _sshd(tmp_path, authorized)
        user = d.ssh[0]
        key = str(tmp_path / "me")

        # a host key that is not in known_hosts is refused, never added
        (tmp_path / "empty").write_text("")
        with pytest.raises(BackendError, match="known_hosts"):
            connect("127.0.0.1", port, user, tmp_path / "empty", key, sock=_from("127.0.0.2", port))
        # sshd itself applies the job's CIDR rule to the key: from 127.0.0.1 it is refused
        with pytest.raises(BackendError):
            connect("127.0.0.1", port, user, known, key, sock=_from("127.0.0.1", port))
        # from inside the rule, the tunnel carries a VNC login to the head node's display
        client = connect("127.0.0.1", port, user, known, key, sock=_from("127.0.0.2", port))
        forwarder = Forwarder(client, 0, d.vnc_port).start()
        try:
            info = authenticate("127.0.0.1", forwarder.local_port, d.secret.password)
            assert job_id in info.name
        finally:
            forwarder.close()
            client.close()
        assert "correct key but not from a permitted host" in (tmp_path / "log").read_text()
    finally:
        if sshd is not None:
            sshd.terminate()
            sshd.wait(10)
        registry.remove(engine.client.user, fingerprint)
        engine.client.terminate(job_id)
        engine.wait_job_terminal(job_id, timeout=60)
