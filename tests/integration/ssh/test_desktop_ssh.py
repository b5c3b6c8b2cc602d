"""The desktop on the ssh backend's head node (a node in its own network namespace): Xvnc, openbox and xterm run
there, VNC logins pass through the kept ssh connection, noVNC through the node's gateway, nftables rules are
loaded in the node's network, and `e2e desktop --tunnel --run` carries a native viewer's login."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from orchestrator.cluster import sshconn
from orchestrator.cluster.ssh import SSHBackend
from orchestrator.desktop import connect
from orchestrator.desktop.keys import KeyRegistry
from orchestrator.desktop.rfb import AuthFailed, authenticate, handshake
from orchestrator.model.paths import JobPaths
from orchestrator.model.settings import Settings
from orchestrator.worker.stack import free_port
from tests.conftest import require
from tests.integration.conftest import Engine, make_settings, redis_flush, wait_for
from tests.integration.desktop_helpers import WebSocketStream, require_desktop_tools, spec, wait_desktop
from tests.integration.sshcluster import NodeCluster, namespaces_available, sshd_available

pytestmark = pytest.mark.integration

DB = "/6"  # this module's own Redis database
X11_SOCKETS = Path("/tmp/.X11-unix")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_desktop_tools()
    require(namespaces_available(), "network namespaces (root and iproute2), so the head node is a machine apart")
    require(sshd_available(), "sshd and ssh-keygen (apt-get install openssh-server openssh-client)")
    # Each node has its own X socket directory: with this machine's, a node's Xvnc (which cannot see this
    # machine's X servers from its pid namespace) would take over their sockets. sshd reads ~/.ssh/authorized_keys
    # too (where the engine installs users' keys), like every node of the test cluster.
    nodes = NodeCluster(tmp_path_factory.mktemp("desk-ssh"), count=1, private=[X11_SOCKETS], network="netns")
    try:
        yield nodes.start()
    finally:
        sshconn.close_all()
        nodes.stop()


@pytest.fixture(scope="module")
def engine(cluster, redis_url, tmp_path_factory):
    redis_flush(redis_url + DB)
    eng = Engine(make_settings(tmp_path_factory.mktemp("desk-ssh-home"), redis_url + DB,
                               inventory=cluster.inventory()))
    try:
        yield eng
    finally:
        eng.close()


def _netns(cluster: NodeCluster, *argv: str) -> subprocess.CompletedProcess:
    """A command in the head node's network namespace (what `ip netns exec` shows is that node's network)."""
    return subprocess.run(["ip", "netns", "exec", cluster.nodes[0].netns, *argv], capture_output=True, text=True,
                          timeout=30)


def _node_processes(cluster: NodeCluster) -> dict[str, int]:
    """command name -> pid of the processes in the head node's network namespace."""
    pids = subprocess.run(["ip", "netns", "pids", cluster.nodes[0].netns], capture_output=True, text=True,
                          timeout=10).stdout.split()
    found = {}
    for pid in pids:
        try:
            found[Path(f"/proc/{pid}/comm").read_text().strip()] = int(pid)
        except OSError:
            pass
    return found


def _uids(pid: int) -> list[int]:
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("Uid:"))
    return [int(v) for v in line.split()[1:]]


def _listens_on_loopback(pid: int, port: int) -> bool:
    """Whether the process's network namespace has a TCP listener on 127.0.0.1:port (/proc/PID/net/tcp)."""
    rows = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    return any(r.split()[1] == f"0100007F:{port:04X}" and r.split()[3] == "0A" for r in rows)


def test_desktop_runs_on_the_ssh_head_node_and_the_tunnel_reaches_it(cluster, engine, tmp_path):
    client = engine.client
    head = cluster.nodes[0]
    host = f"{cluster.subnet}.1"  # this machine, as the node sees it
    outsider = f"{cluster.subnet}.250"
    subprocess.run(["ip", "addr", "add", f"{outsider}/24", "dev", cluster.bridge], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "me")], check=True)
    KeyRegistry(client.store).add(client.user, (tmp_path / "me.pub").read_text())
    # this machine's bridge address (the tunnel's sshd and the gateway see it) and loopback (what the engine's
    # Redis sees the CLI at) are inside the rule; the extra bridge address is not
    job = spec("desk-ssh", access=[f"{host}/32", "127.0.0.1/32"], geometry="1024x768")
    job_id = client.submit_data({**job, "cluster": {"backend": "ssh", "nodes": 1, "cores_per_node": 1}})
    rec = wait_desktop(engine, job_id)
    assert rec.state == "ready", rec.reason
    d = connect.desktop(client, job_id)
    owner = client.status(job_id).account or "root"  # the job's account (e2e-jobs under a root test session)
    assert d.ssh == (owner, head.address, head.port)  # people log in to the head node as the job's account

    # Xvnc, the window manager and the terminal run on the head node, Xvnc listening on that node's loopback only
    procs = wait_for(lambda: (p := _node_processes(cluster)) and {"Xvnc", "openbox", "xterm"} <= set(p) and p,
                     30, "the session's processes on the head node")
    assert _listens_on_loopback(procs["Xvnc"], d.vnc_port)
    uid = pwd.getpwnam(owner).pw_uid   # each the job account's: real, effective, saved and filesystem uid
    assert {name: _uids(procs[name]) for name in ("Xvnc", "openbox", "xterm")} == \
        {name: [uid] * 4 for name in ("Xvnc", "openbox", "xterm")}
    paths = JobPaths.for_job(engine.settings.root, job_id)
    assert Path(os.readlink(f"/proc/{procs['xterm']}/cwd")) == paths.work
    with pytest.raises(OSError):
        socket.create_connection((head.address, d.vnc_port), timeout=5).close()
    assert (paths.root / "desktop" / "passwd").stat().st_mode & 0o777 == 0o600

    # a VNC login through the engine's ssh connection (a direct-tcpip channel) works with the password only
    backend = SSHBackend(Settings(home=tmp_path, inventory=engine.settings.inventory))
    node = backend.inventory()[0]
    stream = backend.open_tcp(node, d.vnc_port)
    try:
        info = handshake(stream, d.secret.password)
    finally:
        stream.close()
    assert (info.width, info.height) == (1024, 768) and job_id in info.name
    with pytest.raises(AuthFailed):
        stream = backend.open_tcp(node, d.vnc_port)
        try:
            handshake(stream, "wrong-pw")
        finally:
            stream.close()

    # noVNC from the node's gateway at the URL the user gets, and a VNC login over its WebSocket
    assert d.record.url.startswith(f"http://{head.address}:")
    with urllib.request.urlopen(d.record.url, timeout=10) as page:
        assert page.status == 200 and b"noVNC" in page.read()
    ws = WebSocketStream(f"ws://{head.address}:{d.record.web_port}/websockify?token={d.secret.token}")
    try:
        assert job_id in handshake(ws, d.secret.password).name
    finally:
        ws.close()

    # the nftables rules are loaded in the head node's network: an address outside the rule is dropped there
    with pytest.raises(OSError):
        socket.create_connection((head.address, d.record.web_port), timeout=2, source_address=(outsider, 0))
    table = _netns(cluster, "nft", "list", "table", "inet", f"e2e_desktop_{job_id}")
    assert table.returncode == 0, table.stderr
    assert f"{host}" in table.stdout and "127.0.0.1" in table.stdout
    drop = next(line for line in table.stdout.splitlines() if "drop" in line)
    assert f"dport {d.record.web_port}" in drop and "counter packets 0 " not in drop, drop

    # the user's key is in the job account's own authorized_keys on the head node (private, theirs, limited to
    # the rule's networks), never the engine login's
    home = head.dir / "home" if owner == "root" else head.dir / "homes" / owner
    authorized = home / ".ssh" / "authorized_keys"
    assert authorized.stat().st_mode & 0o777 == 0o600
    assert authorized.stat().st_uid == pwd.getpwnam(owner).pw_uid
    if owner != "root":
        root_keys = head.dir / "home" / ".ssh" / "authorized_keys"
        assert not root_keys.exists() or "from=" not in root_keys.read_text()
    assert f'from="{host}/32,127.0.0.1/32"' in authorized.read_text()

    # `e2e desktop --tunnel --run` with that key: local port -> the head node's display
    local = free_port()
    env = {**os.environ, "E2E_HOME": str(engine.settings.root), "E2E_REDIS_URL": engine.settings.redis_url,
           "E2E_INVENTORY": str(engine.settings.inventory), "PYTHONUNBUFFERED": "1"}
    # -X faulthandler: if it hangs, SIGABRT makes it print where each of its threads is
    tunnel = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "orchestrator.cli.main", "desktop", job_id,
                               "--tunnel", "--run",
                               "--local-port", str(local), "-i", str(tmp_path / "me")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any("tunnel open" in line for line in lines):
            line = tunnel.stdout.readline()
            assert line, f"the tunnel command ended: {''.join(lines)} {tunnel.stderr.read()}"
            lines.append(line)
        assert f"ssh -N -L {local}:127.0.0.1:{d.vnc_port} {owner}@{head.address}" in "".join(lines)
        assert job_id in authenticate("127.0.0.1", local, d.secret.password).name
        with pytest.raises(AuthFailed):
            authenticate("127.0.0.1", local, "wrong-pw")
    finally:
        # Ctrl-C closes it: communicate() drains both pipes meanwhile (a full pipe would hold the process)
        tunnel.send_signal(signal.SIGINT)
        try:
            _, tunnel_err = tunnel.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            tunnel.send_signal(signal.SIGABRT)
            _, tunnel_err = tunnel.communicate()
            raise AssertionError("`e2e desktop --tunnel --run` still up 30 s after Ctrl-C: "
                                 f"{tunnel_err[-2000:]}") from None
    assert tunnel.returncode == 0, tunnel_err

    # the web client through the API: with every packet to the gateway's port dropped in the head node's own
    # network (this machine, the browser's side, reaches nothing there), the API relays noVNC's WebSocket to
    # Xvnc over the engine's ssh connection, after the job's CIDR check (the API sees 127.0.0.1, inside it)
    from tests.integration.api.conftest import Served

    block = tmp_path / "block.nft"
    block.write_text(f"table inet e2e_test_block {{\n  chain input {{\n    type filter hook input priority -50;\n"
                     f"    tcp dport {d.record.web_port} drop\n  }}\n}}\n")
    assert _netns(cluster, "nft", "-f", str(block)).returncode == 0
    served = Served(engine.settings)
    try:
        with pytest.raises(OSError):
            socket.create_connection((head.address, d.record.web_port), timeout=2).close()
        admin = client.store.users.create(f"deskadmin{os.getpid()}", admin=True)
        proxied = WebSocketStream(f"ws://127.0.0.1:{served.port}/desktop/{job_id}/websockify",
                                  [f"Authorization: Bearer {admin}"])
        try:
            assert job_id in handshake(proxied, d.secret.password).name
        finally:
            proxied.close()
        _chromium_through_the_api(served.url, admin, job_id, tmp_path)
    finally:
        served.stop()
        _netns(cluster, "nft", "delete", "table", "inet", "e2e_test_block")

    # terminate: the session ends on the node, its rules and the user's key go
    client.terminate(job_id)
    engine.wait_job_terminal(job_id, timeout=60)
    assert not {"Xvnc", "openbox", "xterm"} & set(_node_processes(cluster))
    assert _netns(cluster, "nft", "list", "table", "inet", f"e2e_desktop_{job_id}").returncode != 0
    mine = (tmp_path / "me.pub").read_text().split()[1]
    assert mine not in authorized.read_text()  # the account's other keys (its node key) stay


def _chromium_through_the_api(api_url: str, token: str, job_id: str, tmp_path: Path) -> None:
    """noVNC in a real browser from a one-time link: connected, and the head node's screen drawn."""
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.integration.api.test_desktop_api import CANVAS_COLOURS
    from tests.integration.desktop_helpers import chromium, close_chromium

    link = httpx.post(f"{api_url}/api/v1/jobs/{job_id}/desktop/link", headers={"Authorization": f"Bearer {token}"})
    assert link.status_code == 201, link.text
    driver = chromium()
    try:
        driver.get(api_url + link.json()["path"])
        status = lambda drv: drv.find_element(By.ID, "noVNC_status").get_attribute("textContent")  # noqa: E731
        WebDriverWait(driver, 30).until(lambda drv: "Connected" in status(drv))
        assert job_id in status(driver)
        # Generous: the first frame crosses the API's relay and the engine's ssh connection, and CI runs two
        # suites at once on two cores. A failure keeps the screenshot of what the browser had.
        shot = tmp_path / "desktop-api-ssh.png"
        try:
            wait_for(lambda: driver.execute_script(CANVAS_COLOURS) > 1, 60, "the head node's desktop on the canvas")
        finally:
            driver.save_screenshot(str(shot))
    finally:
        close_chromium(driver)
