"""The desktop through the API without a cluster: job-scoped tokens, one-time links, the CIDR check on the real
peer address (with and without a trusted proxy), and the WebSocket proxy carrying bytes to a loopback 'Xvnc'."""

from __future__ import annotations

import socket
import threading

import fakeredis
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from orchestrator.api.app import create_app
from orchestrator.api.users import hash_token
from orchestrator.control.desktop import redeem_desktop_link
from orchestrator.desktop.secrets import DesktopSecrets
from orchestrator.model.events import EventKind
from orchestrator.model.settings import Settings
from orchestrator.model.states import JobState
from orchestrator.store.jobs import JobStore

API = "/api/v1"


@pytest.fixture
def store():
    return JobStore(fakeredis.FakeRedis(decode_responses=True))


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path, redis_url="redis://127.0.0.1:1/0")


def new_job(store, owner="alice", access=("0.0.0.0/0", "::/0"), vnc_port=None) -> str:
    job_id = store.create_job(name="j", owner=owner, spec={"name": "j", "desktop": {"access": list(access)}},
                              backend="local", solver="command")
    if vnc_port is not None:  # a ready desktop on the first local node, as the desktop service records it
        store.update_job(job_id, nodes=["node-01"], desktop={
            "state": "ready", "url": "http://127.0.0.1:1/vnc.html", "vnc_port": vnc_port, "web_port": 1,
            "access": list(access), "ssh": ["me", "127.0.0.1", 22]})
        DesktopSecrets(store).ensure(job_id)
    return job_id


def local_client(settings, store):
    return TestClient(create_app(settings, store), client=("127.0.0.1", 50000))


def terminate(store, job_id):
    store.transition_job(job_id, JobState.TERMINATING)
    store.transition_job(job_id, JobState.TERMINATED)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


# -- the job-scoped token

def test_job_token_reads_and_controls_its_job_only(store, settings):
    owner = store.users.create("alice")
    store.users.create("root", admin=True)
    mine, other = new_job(store), new_job(store)
    api = local_client(settings, store)
    made = api.post(f"{API}/jobs/{mine}/token", headers=bearer(owner))
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert token not in repr({k: store._r.dump(k) for k in store._r.keys("*")})  # stored hashed only
    assert hash_token(token) in repr(store._r.keys("*"))
    user = store.users.authenticate(token)
    assert (user.name, user.admin, user.job) == ("alice", False, mine)

    assert api.get(f"{API}/jobs/{mine}", headers=bearer(token)).json()["id"] == mine
    assert api.get(f"{API}/jobs/{other}", headers=bearer(token)).status_code == 404    # the same user's
    assert api.get(f"{API}/jobs/{other[:3]}", headers=bearer(token)).status_code == 404  # no prefix search
    assert api.post(f"{API}/jobs/{other}/terminate", headers=bearer(token)).status_code == 404
    assert [j["id"] for j in api.get(f"{API}/jobs", headers=bearer(token)).json()] == [mine]
    for method, path in (("GET", "/audit"), ("GET", "/admin/workers"), ("POST", "/nodes/node-01/drain")):
        assert api.request(method, API + path, headers=bearer(token)).status_code == 403, path
    assert api.post(f"{API}/jobs", headers=bearer(token), json={"spec": {}}).status_code == 403  # no submitting
    assert api.post(f"{API}/jobs/{mine}/token", headers=bearer(token)).status_code == 403  # no minting more
    # the owner's own token still sees both jobs
    assert {j["id"] for j in api.get(f"{API}/jobs", headers=bearer(owner)).json()} == {mine, other}

    terminate(store, mine)
    assert api.get(f"{API}/jobs/{mine}", headers=bearer(token)).status_code == 401  # ends with its job
    assert store.users.authenticate(token) is None  # and was revoked on that use
    assert api.post(f"{API}/jobs/{mine}/token", headers=bearer(owner)).status_code == 400


def test_job_token_is_the_owners_and_others_get_404(store, settings):
    store.users.create("alice")
    bob = store.users.create("bob")
    job = new_job(store)
    api = local_client(settings, store)
    assert api.post(f"{API}/jobs/{job}/token", headers=bearer(bob)).status_code == 404


# -- one-time links and the desktop cookie

def _link(api, owner, job):
    made = api.post(f"{API}/jobs/{job}/desktop/link", headers=bearer(owner))
    assert made.status_code == 201, made.text
    path = made.json()["path"]
    assert path.startswith(f"/desktop/{job}/link#code=") and "password=" in path
    return path.split("#code=", 1)[1].split("&", 1)[0]


def test_one_time_link_works_once(store, settings):
    owner = store.users.create("alice")
    job = new_job(store, vnc_port=1)
    api = local_client(settings, store)
    assert api.get(f"/desktop/{job}/vnc.html").status_code == 401  # no session, no link
    code = _link(api, owner, job)
    assert code not in repr({k: store._r.dump(k) for k in store._r.keys("*")})  # kept hashed
    used = api.post(f"/desktop/{job}/link", json={"code": code})
    assert used.status_code == 204 and "e2e_desktop" in used.cookies
    page = api.get(f"/desktop/{job}/vnc.html")
    assert page.status_code == 200 and b"noVNC" in page.content
    assert api.get(f"/desktop/{job}/../../etc/passwd").status_code in (401, 404)
    fresh = local_client(settings, store)
    assert fresh.post(f"/desktop/{job}/link", json={"code": code}).status_code == 403  # second use
    events = [e for e in store.events(job) if e.kind is EventKind.ACCESS_REFUSED]
    assert events and "used or expired" in events[-1].data["reason"]
    # the cookie opens this desktop and nothing else
    other = new_job(store, vnc_port=1)
    assert api.get(f"/desktop/{other}/vnc.html").status_code == 401


def test_expired_link_is_refused(store, settings):
    owner = store.users.create("alice")
    job = new_job(store, vnc_port=1)
    api = local_client(settings, store)
    code = _link(api, owner, job)
    store._r.pexpire(store._keys.desktop_pass(job, "link", hash_token(code)), 1)  # as after 60 s
    import time
    time.sleep(0.01)
    assert redeem_desktop_link(store, job, code) is None
    assert api.post(f"/desktop/{job}/link", json={"code": code}).status_code == 403


def test_share_link_is_view_only_reusable_and_ends_with_its_expiry(store, settings):
    owner = store.users.create("alice")
    job = new_job(store, vnc_port=1)
    full = store.secrets.read(job).password
    store.secrets.set_password(job, full, "viewpw12")  # an existing view-only password is used, not replaced
    api = local_client(settings, store)
    assert api.post(f"{API}/jobs/{job}/desktop/share", headers=bearer(owner),
                    json={"expires_in": 10**7}).status_code == 422
    made = api.post(f"{API}/jobs/{job}/desktop/share", headers=bearer(owner), json={"expires_in": 120})
    assert made.status_code == 201, made.text
    path = made.json()["path"]
    assert "view_only=1" in path and "password=viewpw12" in path and full not in path
    code = path.split("#code=", 1)[1].split("&", 1)[0]
    for _ in range(2):  # reusable (a reload, a second tab)
        assert local_client(settings, store).post(f"/desktop/{job}/link", json={"code": code}).status_code == 204
    cookie = redeem_desktop_link(store, job, code)
    left = store._r.pttl(store._keys.desktop_pass(job, "cookie", hash_token(cookie)))
    assert 0 < left <= 120_000  # the cookie ends with the share, not 12 h later
    share_key = store._keys.desktop_pass(job, "share", hash_token(code))
    store._r.pexpire(share_key, 1)
    import time
    time.sleep(0.01)
    assert redeem_desktop_link(store, job, code) is None
    assert store.secrets.read(job).view_password == "viewpw12"
    assert any(e.data.get("action") == "desktop-share" for e in store.events(job))


def test_link_code_never_reaches_a_url_a_server_sees(store, settings):
    owner = store.users.create("alice")
    job = new_job(store, vnc_port=1)
    api = local_client(settings, store)
    made = api.post(f"{API}/jobs/{job}/desktop/link", headers=bearer(owner)).json()
    before_fragment = made["path"].split("#", 1)[0]
    assert before_fragment == f"/desktop/{job}/link"


# -- CIDR at the API, on the real peer address

def _proxied(settings, store, trusted):
    app = create_app(settings, store)
    return TestClient(ProxyHeadersMiddleware(app, trusted_hosts=trusted), client=("198.51.100.9", 4000))


def test_cidr_applies_to_the_real_peer_address(store, settings):
    owner = store.users.create("alice")
    job = new_job(store, access=["203.0.113.0/24"], vnc_port=1)
    forwarded = {**bearer(owner), "X-Forwarded-For": "203.0.113.7"}
    # no trusted proxy: the connection's own address (outside the rule) counts, whatever the header says
    plain = _proxied(settings, store, trusted=[])
    assert plain.get(f"/desktop/{job}/vnc.html", headers=forwarded).status_code == 403
    assert plain.post(f"{API}/jobs/{job}/desktop/link", headers=forwarded).status_code == 403
    refused = [e for e in store.events(job) if e.kind is EventKind.ACCESS_REFUSED]
    assert refused and refused[-1].data["address"] == "198.51.100.9"
    # the proxy trusted: the address it forwards is the peer's, inside the rule
    behind = _proxied(settings, store, trusted=["198.51.100.9"])
    assert behind.get(f"/desktop/{job}/vnc.html", headers=forwarded).status_code == 200
    assert behind.get(f"/desktop/{job}/vnc.html", headers={**bearer(owner), "X-Forwarded-For": "192.0.2.1"}
                      ).status_code == 403


# -- the WebSocket proxy

class FakeVnc:
    """A loopback listener that greets like Xvnc and echoes what it gets."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self.echo, args=(conn,), daemon=True).start()

    @staticmethod
    def echo(conn: socket.socket) -> None:
        conn.sendall(b"RFB 003.008\n")
        while data := conn.recv(4096):
            conn.sendall(data.upper())
        conn.close()


def test_websocket_carries_bytes_both_ways_for_the_owner_only(store, settings):
    owner = store.users.create("alice")
    bob = store.users.create("bob")
    vnc = FakeVnc()
    job = new_job(store, vnc_port=vnc.port)
    api = local_client(settings, store)
    with api.websocket_connect(f"/desktop/{job}/websockify", headers=bearer(owner),
                               subprotocols=["binary"]) as ws:
        assert ws.receive_bytes() == b"RFB 003.008\n"
        ws.send_bytes(b"rfb 003.008\n")
        assert ws.receive_bytes() == b"RFB 003.008\n"
    for headers in (bearer(bob), {}, {**bearer(owner), "Origin": "http://evil.example"}):
        with pytest.raises(WebSocketDisconnect):
            with api.websocket_connect(f"/desktop/{job}/websockify", headers=headers) as ws:
                ws.receive_bytes()
    refused = [e.data for e in store.events(job) if e.kind is EventKind.ACCESS_REFUSED]
    assert any("cross-site" in e["reason"] and e["entry"] == "api desktop proxy" for e in refused), refused
    assert any(e.get("user") == "bob" and e["reason"] == "not the job's owner" for e in refused), refused


# -- the desktop terminal's CLI: the job argument defaults to $E2E_JOB

def test_cli_job_argument_defaults_to_e2e_job(monkeypatch):
    from typer.testing import CliRunner

    from orchestrator.cli import control as cli_control
    from orchestrator.cli import main as cli_main
    from orchestrator.cli.common import app
    from orchestrator.model.errors import NotFound

    seen = []

    class Recorder:
        def __getattr__(self, name):
            def call(job, *args, **kwargs):
                seen.append((name, job))
                raise NotFound(f"no job {job!r}")
            return call

    for module in (cli_main, cli_control):
        monkeypatch.setattr(module, "_client", Recorder)
    runner = CliRunner()
    commands = (["status"], ["pause"], ["resume"], ["restart"], ["rerun"], ["terminate"], ["logs"],
                ["edit", "--set", "x=1"])
    for args in commands:
        runner.invoke(app, args, env={"E2E_JOB": "abc123"})
    assert [job for _, job in seen] == ["abc123"] * len(commands), seen
    assert runner.invoke(app, ["status"], env={"E2E_JOB": ""}).exit_code == 2  # no job, no default: usage error
