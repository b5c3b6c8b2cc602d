"""Red-team findings 8 and 10 at their seams: E2E_TRUSTED_PROXIES parsed and checked, `e2e serve` believes
forwarded headers only from it; same-site rules for cookie requests; per-user caps (429); a desktop wait that a
revoked token ends; `e2e desktop --open` puts no secret on any command line."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fakeredis
import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from starlette.requests import Request

from orchestrator.api import cluster
from orchestrator.api.app import create_app
from orchestrator.api.deps import Slots, cross_site
from orchestrator.control.service import ControlService
from orchestrator.model.errors import InvalidState
from orchestrator.model.settings import Settings, SettingsError, load_settings
from orchestrator.store.jobs import JobStore

ROOT = Path(__file__).resolve().parents[2]


# -- finding 8: forwarded headers only from configured proxies

def test_trusted_proxies_parse_a_comma_list_and_default_to_none(monkeypatch):
    monkeypatch.delenv("E2E_TRUSTED_PROXIES", raising=False)
    assert Settings().trusted_proxies == []
    monkeypatch.setenv("E2E_TRUSTED_PROXIES", " 10.0.0.5, 10.1.0.0/16 2001:db8::/32")
    assert Settings().trusted_proxies == ["10.0.0.5/32", "10.1.0.0/16", "2001:db8::/32"]
    for spelled in ("[]", '["10.0.0.5/32"]'):  # the JSON the embedded stack hands its worker and beat
        monkeypatch.setenv("E2E_TRUSTED_PROXIES", spelled)
        assert Settings().trusted_proxies == json.loads(spelled)


def test_a_bad_trusted_proxy_is_named(monkeypatch):
    monkeypatch.setenv("E2E_TRUSTED_PROXIES", "10.0.0.5,10.0.0.300/24")
    with pytest.raises(SettingsError, match=r"E2E_TRUSTED_PROXIES: '10.0.0.300/24' is not an IP address or CIDR"):
        load_settings()


def test_bad_settings_are_one_message_naming_each_variable_never_a_traceback_or_a_value(tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "E2E_HOME": str(tmp_path / "e2e"),
           "E2E_LOCAL_NODES": "-1", "E2E_API_MAX_STREAMS": "lots", "REDIS_URL": "redis://:hunter2@h:1/0",
           "E2E_RECONCILE_INTERVAL": "hunter2"}
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "ls"], env=env, capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[0] == "error: the engine's settings are invalid:"
    assert {line.split(":")[0].strip(" -") for line in done.stderr.splitlines()[1:]} == \
        {"E2E_LOCAL_NODES", "E2E_API_MAX_STREAMS", "E2E_RECONCILE_INTERVAL"}
    assert "hunter2" not in done.stderr


@pytest.mark.parametrize(("proxies", "expected"), [
    ([], {"proxy_headers": False}),
    (["10.0.0.5"], {"proxy_headers": True, "forwarded_allow_ips": ["10.0.0.5/32"]}),
])
def test_serve_believes_forwarded_headers_only_from_the_configured_proxies(monkeypatch, proxies, expected):
    import uvicorn

    from orchestrator.cli import admin

    seen: dict = {}
    settings = Settings(redis_url="redis://127.0.0.1:1/0", trusted_proxies=proxies)
    monkeypatch.setattr(admin, "get_settings", lambda: settings)
    monkeypatch.setattr(admin, "_keep_tcp_nodelay", lambda module: None)
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: seen.update(kwargs))
    admin.serve(host=None, port=None, workers=1)
    # uvicorn's defaults are proxy_headers=True from 127.0.0.1: anyone on the host could claim any address
    assert {k: seen.get(k) for k in expected} == expected


# -- finding 10: cross-site requests

def request(**headers: str) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in {"host": "e2e.example:8765", **headers}.items()]
    return Request({"type": "http", "method": "POST", "path": "/ui/login", "headers": raw})


@pytest.mark.parametrize(("headers", "refused"), [
    ({}, False),                                                       # curl, scripts: no browser, no forgery
    ({"Sec-Fetch-Site": "same-origin", "Origin": "https://e2e.example"}, False),  # proxy rewrote Host: still ours
    ({"Sec-Fetch-Site": "none"}, False),                               # typed in the address bar
    ({"Sec-Fetch-Site": "cross-site", "Origin": "http://e2e.example:8765"}, True),
    ({"Sec-Fetch-Site": "same-site"}, True),                           # a sibling subdomain is not us
    ({"Origin": "http://e2e.example:8765"}, False),                    # an older browser, our page
    ({"Origin": "http://evil.example"}, True),
    ({"Origin": "null"}, True),                                        # sandboxed frames, data: URLs
])
def test_cross_site_tells_browser_requests_from_other_sites(headers, refused):
    assert (cross_site(request(**headers)) is not None) is refused


# -- finding 10: per-user caps

def test_slots_cap_each_user_apart_and_release_once():
    slots = Slots(2, "live streams", "E2E_API_MAX_STREAMS")
    first, second = slots.take("alice"), slots.take("alice")
    with pytest.raises(HTTPException) as refused:
        slots.take("alice")
    assert refused.value.status_code == 429 and "E2E_API_MAX_STREAMS" in refused.value.detail
    slots.take("bob")                                                   # another user is unaffected
    first()
    first()                                                             # a second release frees nothing more
    assert slots.count("alice") == 1
    slots.take("alice")
    with pytest.raises(HTTPException):
        slots.take("alice")
    second()


@pytest.fixture
def starting_desktop(monkeypatch):
    """Every job's desktop is starting and never gets ready (the route polls, then gives up)."""
    def not_ready(self, job, wait=0):
        raise InvalidState(f"the desktop of job {job} is not ready (desktop STARTING, job UP)")
    monkeypatch.setattr(ControlService, "desktop", not_ready)
    monkeypatch.setattr(cluster, "_still_starting", lambda client, job: True, raising=False)


def test_desktop_waits_are_capped_per_user_and_end_when_the_token_is_revoked(tmp_path, starting_desktop):
    store = JobStore(fakeredis.FakeRedis(decode_responses=True))
    alice, bob = store.users.create("alice"), store.users.create("bob")
    app = create_app(Settings(home=tmp_path, redis_url="redis://127.0.0.1:1/0", api_max_desktop_waits=1), store)
    replies: dict = {}
    with TestClient(app) as client:
        def wait_as_alice():
            started = time.monotonic()
            reply = client.get("/api/v1/jobs/j1/desktop", params={"wait": 20},
                               headers={"Authorization": f"Bearer {alice}"})
            replies["waiting"] = (reply, time.monotonic() - started)

        waiting = threading.Thread(target=wait_as_alice)
        waiting.start()
        deadline = time.monotonic() + 10
        while app.state.engine.desktop_waits.count("alice") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        second = client.get("/api/v1/jobs/j1/desktop", params={"wait": 5}, headers={"Authorization": f"Bearer {alice}"})
        assert second.status_code == 429 and "E2E_API_MAX_DESKTOP_WAITS" in second.json()["error"]
        theirs = client.get("/api/v1/jobs/j2/desktop", params={"wait": 0.3}, headers={"Authorization": f"Bearer {bob}"})
        assert theirs.status_code == 409 and "not ready" in theirs.json()["error"]  # waited, not capped
        store.users.revoke(alice)
        waiting.join(10)
    reply, took = replies["waiting"]
    assert reply.status_code == 401 and "revoked" in reply.json()["error"] and took < 6
    assert app.state.engine.desktop_waits.count("alice") == 0


# -- finding 10: no secret on a command line

FAKE_BROWSER = """#!/bin/sh
# what a browser would see: its argv, its parent's command line, and the page it was given
out="$E2E_TEST_BROWSER_OUT"
printf '%s\\n' "$@" > "$out.argv"
tr '\\0' '\\n' < /proc/$PPID/cmdline > "$out.parent"
page="${1#file://}"
stat -c %a "$page" > "$out.mode"
cat "$page" > "$out.page"
"""


class FakeAPI(BaseHTTPRequestHandler):
    """The one route `e2e --server URL desktop JOB` calls, answering a desktop with a token and a password."""

    info = {"id": "j1", "state": "UP", "vnc_port": 5901, "password": "pw-Secret9",
            "url": "http://head:6080/vnc.html#path=websockify%3Ftoken%3Dtok-SECRET42&password=pw-Secret9",
            "ssh": {"user": "u", "host": "head", "port": 22}, "tunnel": "ssh ..."}

    def do_GET(self):  # noqa: N802 - http.server's name
        body = json.dumps(self.info).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_desktop_open_puts_no_secret_on_any_command_line(tmp_path):
    browser = tmp_path / "browser.sh"
    browser.write_text(FAKE_BROWSER)
    browser.chmod(0o755)
    out = tmp_path / "seen"
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}
    env.update(BROWSER=str(browser), E2E_TEST_BROWSER_OUT=str(out), XDG_RUNTIME_DIR=str(runtime),
               E2E_TOKEN="e2e_api-token-SECRET", REDIS_URL="redis://127.0.0.1:1/0")
    try:
        proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--server", f"http://127.0.0.1:"
                               f"{server.server_address[1]}", "desktop", "j1", "--open"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr
    argv, parent = (Path(f"{out}.argv").read_text(), Path(f"{out}.parent").read_text())
    assert "e2e-desktop-" in argv and "open.html" in argv             # the browser got the page's path
    for secret in ("tok-SECRET42", "pw-Secret9", "e2e_api-token-SECRET"):
        assert secret not in argv and secret not in parent
    assert Path(f"{out}.mode").read_text().strip() == "600"
    assert FakeAPI.info["url"].replace("&", "&amp;") in Path(f"{out}.page").read_text()  # it leads to the desktop
    assert list(runtime.iterdir()) == []                              # read, then removed
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
