"""Access, part 1: every way into a job's desktop refuses the wrong caller, records the refusal as an event, and
no secret reaches events or logs. Real pieces: the engine (Redis, Celery), Xvnc with VncAuth, the web gateway,
a private sshd for the tunnel (reading the head node's authorized_keys as the engine installs it).

Refused: a wrong VNC password, a client outside the job's CIDR at the gateway, a forged session token, the
tunnel helper from outside the CIDR, the tunnel to an sshd whose host key is unknown, and one whose key changed.
Each attempt is paired with the same attempt done right, which must work (so a refusal is never vacuous).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from orchestrator.cluster.base import HostKeyRefused
from orchestrator.cluster.tunnel import Forwarder
from orchestrator.desktop import connect
from orchestrator.desktop.keys import KeyRegistry
from orchestrator.desktop.rfb import AuthFailed, authenticate
from orchestrator.model.errors import UserError
from orchestrator.model.events import EventKind
from orchestrator.model.paths import JobPaths
from tests.conftest import require
from tests.integration.conftest import engine, redis_url, wait_for  # noqa: F401 (fixtures)
from tests.integration.desktop_helpers import require_desktop_tools, wait_desktop
from tests.integration.test_desktop import _http_get
from tests.integration.test_desktop_tunnel import _from, _sshd
from tests.resilience import record

pytestmark = pytest.mark.integration
LICENCE = "1055@licence-SECRET-e41d"
UPGRADE = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"


def _refusals(client, job_id: str) -> list[dict]:
    return [e.data for e in client.events(job_id) if e.kind is EventKind.ACCESS_REFUSED]


def _has(client, job_id: str, **fields) -> dict | None:
    return next((r for r in _refusals(client, job_id) if all(r.get(k) == v for k, v in fields.items())), None)


def test_every_desktop_entry_refuses_and_records_and_keeps_secrets(engine, tmp_path):  # noqa: F811
    require_desktop_tools()
    require(subprocess.run(["which", "ssh-keygen"], capture_output=True).returncode == 0,
            "ssh-keygen (apt-get install openssh-client)")
    client = engine.client
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "me")], check=True)
    registry = KeyRegistry(client.store)
    fingerprint = registry.add(client.user, (tmp_path / "me.pub").read_text()).fingerprint
    # a licence key in the spec (a Secret): the run needs it, nobody else may see it
    (tmp_path / "in.cas.h5").write_text("case")
    job_id = client.submit_data({"name": "access-desk", "desktop": {"enabled": True, "access": ["127.0.0.2/32"]},
                                 "solver": {"name": "fluent", "case": str(tmp_path / "in.cas.h5"),
                                            "license_file": LICENCE}})
    sshd = None
    results: dict[str, bool] = {}
    leaks: list[str] | None = None
    try:
        rec = wait_desktop(engine, job_id)
        assert rec.state == "ready", rec.reason
        d = connect.desktop(client, job_id)

        # 1. a wrong VNC password, straight at Xvnc: refused by Xvnc, recorded from its log
        assert authenticate("127.0.0.1", d.vnc_port, d.secret.password).name
        with pytest.raises(AuthFailed):
            authenticate("127.0.0.1", d.vnc_port, "wrong-pw1")
        results["wrong VNC password"] = bool(wait_for(
            lambda: _has(client, job_id, entry="vnc", reason="wrong VNC password", address="127.0.0.1"), 20,
            "the wrong-password event"))

        # 2. outside the CIDR at the web gateway (no answer at all), 3. inside with a forged token (403)
        port = d.record.web_port
        assert _http_get(port, "127.0.0.2").startswith(b"HTTP/1.1 200")
        assert _http_get(port, "127.0.0.1") == b""
        assert _http_get(port, "127.0.0.2", "/websockify?token=forged", UPGRADE).startswith(b"HTTP/1.1 403")
        assert _http_get(port, "127.0.0.2", f"/websockify?token={d.secret.token}", UPGRADE).startswith(
            b"HTTP/1.1 101")
        results["gateway: outside CIDR"] = bool(wait_for(
            lambda: _has(client, job_id, entry="web gateway", address="127.0.0.1"), 20, "the gateway CIDR event"))
        results["gateway: forged token"] = bool(wait_for(
            lambda: _has(client, job_id, entry="web gateway", address="127.0.0.2"), 20, "the forged-token event"))

        # 4. the tunnel helper from outside the CIDR (this client reaches Redis from 127.0.0.1)
        with pytest.raises(UserError, match="outside the desktop's allowed networks"):
            connect.check_access(client, d, "tunnel")
        results["tunnel: outside CIDR"] = _has(client, job_id, entry="tunnel",
                                               reason="outside the allowed networks") is not None

        # 5./6. the tunnel to an sshd whose host key is unknown, then one whose key changed
        node = client.job(job_id).nodes[0]
        authorized = engine.settings.root / "nodes" / node / "home" / ".ssh" / "authorized_keys"
        sshd, ssh_port, known = _sshd(tmp_path, authorized)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "imposter")], check=True)
        changed = tmp_path / "changed_known_hosts"
        changed.write_text(f"[127.0.0.1]:{ssh_port} " + " ".join((tmp_path / "imposter.pub").read_text().split()[:2])
                           + "\n")
        (tmp_path / "empty_known_hosts").write_text("")
        key, endpoint = str(tmp_path / "me"), ("127.0.0.1", ssh_port)
        for label, known_hosts, reason in (("tunnel: unknown host key", tmp_path / "empty_known_hosts",
                                            "unknown SSH host key"),
                                           ("tunnel: changed host key", changed, "changed SSH host key")):
            with pytest.raises(HostKeyRefused):
                connect.open_tunnel(client, d, key, known_hosts, endpoint, sock=_from("127.0.0.2", ssh_port))
            results[label] = _has(client, job_id, entry="tunnel", reason=reason) is not None
        ssh = connect.open_tunnel(client, d, key, known, endpoint, sock=_from("127.0.0.2", ssh_port))
        forwarder = Forwarder(ssh, 0, d.vnc_port).start()
        try:  # the control: with the right host key, the tunnel carries a VNC login
            assert job_id in authenticate("127.0.0.1", forwarder.local_port, d.secret.password).name
        finally:
            forwarder.close()
            ssh.close()

        # no secret in the job's events, its record, the engine's logs or the job's log files
        secrets = {"VNC password": d.secret.password, "session token": d.secret.token, "licence key": LICENCE}
        events = json.dumps([e.model_dump() for e in client.events(job_id)], default=str)
        status = json.dumps(client.status(job_id), default=str)
        job_dir = JobPaths.for_job(engine.settings.root, job_id).root
        logs = [p for p in [*job_dir.rglob("*"), *(engine.settings.root / "logs").glob("*")]
                if p.is_file() and (p.suffix in (".log", ".out", ".trn") or p.name.startswith("log."))]
        assert any(p.name == "xvnc.log" for p in logs) and any(p.name == "gateway.log" for p in logs)
        leaks = [f"{what} in {where}" for what, value in secrets.items()
                 for where, text in [("events", events), ("status", status)] +
                 [(str(p), p.read_text(errors="replace")) for p in logs] if value in text]
    finally:
        cases = len(results)
        recorded = sum(results.values())
        record("access: desktop entries", max(cases, 6), recorded,
               f"{recorded}/6 refusals recorded as events (wrong VNC password, gateway CIDR, forged token, tunnel "
               f"CIDR, unknown and changed host key); "
               f"{'secrets not checked' if leaks is None else f'{len(leaks)} secrets in events and logs'}",
               refusals=results, leaks=leaks)
        if sshd is not None:
            sshd.terminate()
            sshd.wait(10)
        registry.remove(client.user, fingerprint)
        client.terminate(job_id)
        engine.wait_job_terminal(job_id, timeout=60)
    assert all(results.values()) and len(results) == 6, results
    assert not leaks, leaks
