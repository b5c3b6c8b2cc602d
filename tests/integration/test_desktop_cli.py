"""`e2e desktop`, `e2e keys` and `e2e access` as a user runs them, against a real engine with a real desktop."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.desktop.rfb import AuthFailed, authenticate
from orchestrator.desktop.vncauth import read_passwd_file
from tests.integration.desktop_helpers import require_desktop_tools, wait_desktop
from tests.integration.test_desktop import _keygen

pytestmark = pytest.mark.integration
E2E = str(Path(sys.executable).parent / "e2e")


@pytest.fixture
def e2e(engine):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    env.update(E2E_HOME=str(engine.settings.root), E2E_REDIS_URL=engine.settings.redis_url)

    def run(*args: str, stdin: str = "", code: int = 0) -> str:
        proc = subprocess.run([E2E, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120)
        assert proc.returncode == code, f"e2e {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr
        return proc.stdout + proc.stderr

    return run


def test_keys_access_and_desktop_commands(e2e, engine, tmp_path):
    require_desktop_tools()
    public = _keygen(tmp_path)
    (tmp_path / "id.pub").write_text(public)
    (tmp_path / "bad.pub").write_text("ssh-dss AAAAB3NzaC1kc3MAAACBAP== old@key\n")

    # keys: add, refuse a bad one without changing anything, list, and later remove
    added = e2e("keys", "add", str(tmp_path / "id.pub"))
    fingerprint = re.search(r"SHA256:\S+", added).group(0)
    assert "not accepted" in e2e("keys", "add", str(tmp_path / "bad.pub"), code=2)
    assert fingerprint in e2e("keys", "ls")

    # access: my-ip is the address the engine sees now; a default for this user, used by the job below
    assert "127.0.0.1/32" in e2e("access", "set", "my-ip")
    assert "127.0.0.0/8" in e2e("access", "set", "127.0.0.0/8", "2001:db8::/32")
    assert "not an IPv4 or IPv6" in e2e("access", "set", "10.0.0.0/40", code=2)
    spec = tmp_path / "job.yaml"
    spec.write_text("name: cli-desk\nsolver: {name: command, command: [sleep, '300']}\n"
                    "desktop: {geometry: 800x600}\n")
    job_id = e2e("submit", str(spec)).strip()
    try:
        rec = wait_desktop(engine, job_id)
        assert rec.state == "ready" and rec.access == ["127.0.0.0/8", "2001:db8::/32"]

        printed = e2e("desktop", job_id).strip().splitlines()
        url = printed[0]  # stdout: the direct URL alone; stderr (after it here): the one-time link through the API
        assert any(f"/desktop/{job_id}/link#code=" in line for line in printed[1:]), printed
        assert url.startswith(rec.url + "#autoconnect=1") and "token%3D" in url and "password=" in url
        status = e2e("status", job_id)
        assert "desktop  ready" in status and rec.url in status and "token" not in status

        # a native viewer's file: the head node is this machine, so it points at the display's port
        vnc = tmp_path / "out.vnc"
        e2e("desktop", job_id, "--vnc-file", str(vnc))
        fields = dict(line.split("=", 1) for line in vnc.read_text().splitlines() if "=" in line)
        assert fields["Host"] == f"127.0.0.1:{rec.vnc_port}" and oct(vnc.stat().st_mode & 0o777) == "0o600"
        password, _ = read_passwd_file(bytes.fromhex(fields["Password"]))
        assert authenticate("127.0.0.1", rec.vnc_port, password).width == 800

        tunnel = e2e("desktop", job_id, "--tunnel", "--local-port", "15901")
        assert f"ssh -N -L 15901:127.0.0.1:{rec.vnc_port} " in tunnel and "PuTTY" in tunnel

        # vncpasswd's dialogue, piped: password, verify, view-only? y, password, verify
        assert "too short" in e2e("desktop", job_id, "--set-password", stdin="abc\nabc\n", code=2)
        assert "mismatch" not in e2e("desktop", job_id, "--set-password",
                                     stdin="s3cret99\ns3cret99\ny\nlook0nly\nlook0nly\n")
        assert authenticate("127.0.0.1", rec.vnc_port, "s3cret99")
        assert authenticate("127.0.0.1", rec.vnc_port, "look0nly")
        with pytest.raises(AuthFailed):
            authenticate("127.0.0.1", rec.vnc_port, password)

        # `e2e share`: a view-only link carrying the view-only password set just above, never the full one
        shared = json.loads(e2e("share", job_id, "--expires", "120", "--json"))
        assert shared["view_only"] and f"/desktop/{job_id}/link#code=" in shared["url"]
        assert "password=look0nly" in shared["url"] and "s3cret99" not in shared["url"]
        assert "expires" in e2e("share", job_id, "--expires", "5", code=2)

        # the head node's authorized_keys has the key, restricted to the job's networks
        node = engine.client.job(job_id).nodes[0]
        authorized = (engine.settings.root / "nodes" / node / "home" / ".ssh" / "authorized_keys").read_text()
        assert 'from="127.0.0.0/8,2001:db8::/32" ssh-ed25519 ' in authorized
    finally:
        e2e("terminate", job_id, "--wait")
        e2e("access", "clear")
        e2e("keys", "rm", fingerprint)
    assert "not ready" in e2e("desktop", job_id, "--wait", "0", code=2)
    assert fingerprint not in e2e("keys", "ls")
