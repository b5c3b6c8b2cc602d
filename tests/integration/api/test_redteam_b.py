"""Red-team findings 4, 8 and 10 replayed against `e2e serve` as a real process on the session's Redis: a revoked
token ends an open event stream within 5 s; a forged X-Forwarded-For from loopback changes neither my-ip nor the
audit (a configured proxy's is believed); one user's streams beyond the cap get 429 while another's go through;
cross-site login and logout are refused while the monitor's own same-origin forms work."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from orchestrator.worker.stack import free_port
from tests.integration.api.conftest import Served
from tests.integration.api.test_api import spec, upload

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
FORGED = "203.0.113.66"


class ServeProcess:
    """`e2e serve` in its own process over the session engine's Redis, with extra settings."""

    def __init__(self, engine, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}
        environ.update(E2E_HOME=str(engine.settings.home), E2E_REDIS_URL=engine.settings.redis_url, **env)
        self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", "--host", "127.0.0.1",
                                      "--port", str(self.port)], cwd=ROOT, env=environ,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.url + "/api/v1/me", timeout=1)
                return
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"e2e serve did not start: {self.proc.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.1)

    def client(self, token: str, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/api/v1", timeout=30,
                            headers={"Authorization": f"Bearer {token}", **headers})

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def served(engine):
    server = ServeProcess(engine, E2E_API_MAX_STREAMS="2")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def jobs(served, tokens, engine):
    """One long job each for alice and bob (streams stay open while their jobs live); terminated after."""
    made = {}
    for role in ("alice", "bob"):
        with served.client(tokens[role][1]) as http:
            inputs = upload(http, "case", {"params.txt": "x=1\n"})
            reply = http.post("/jobs", json={"spec": spec(f"redteam-{role}", f"{inputs}/params.txt", steps=3000)})
            assert reply.status_code == 201, reply.text
            made[role] = reply.json()["id"]
    yield made
    for job_id in made.values():
        engine.client.terminate(job_id)


def read_stream(response: httpx.Response, lines: list[str]) -> None:
    try:
        for line in response.iter_lines():
            lines.append(line)
    except httpx.HTTPError as exc:  # the server closing mid-read still ends the stream
        lines.append(f"! {type(exc).__name__}")


def test_revoking_a_token_ends_its_open_event_stream_within_5s(served, jobs, tokens, engine):
    users = engine.client.store.users
    spare = users.issue(tokens["alice"][0], "stream")
    lines: list[str] = []
    with served.client(spare) as http, http.stream("GET", f"/jobs/{jobs['alice']}/events",
                                                   timeout=httpx.Timeout(30, read=20)) as response:
        assert response.status_code == 200
        reader = threading.Thread(target=read_stream, args=(response, lines), daemon=True)
        reader.start()
        time.sleep(1.0)
        assert reader.is_alive() and any(line.startswith("event:") for line in lines)  # delivering
        revoked_at = time.monotonic()
        users.revoke(spare)
        reader.join(10)
        took = time.monotonic() - revoked_at
    assert not reader.is_alive() and took < 5, f"stream still open {took:.1f}s after the revoke"
    print(f"the stream ended {took:.2f} s after the revoke")
    assert "event: revoked" in lines
    with served.client(spare) as http:
        assert http.get(f"/jobs/{jobs['alice']}/events", timeout=5).status_code == 401


def test_streams_beyond_the_users_cap_get_429_and_another_user_is_unaffected(served, jobs, tokens):
    with served.client(tokens["alice"][1]) as alice, served.client(tokens["bob"][1]) as bob:
        first = alice.send(alice.build_request("GET", f"/jobs/{jobs['alice']}/events"), stream=True)
        second = alice.send(alice.build_request("GET", f"/jobs/{jobs['alice']}/logs/stream"), stream=True)
        try:
            assert (first.status_code, second.status_code) == (200, 200)
            third = alice.get(f"/jobs/{jobs['alice']}/events", timeout=5)
            assert third.status_code == 429 and "E2E_API_MAX_STREAMS" in third.json()["error"]
            with bob.stream("GET", f"/jobs/{jobs['bob']}/events", timeout=5) as theirs:
                assert theirs.status_code == 200                     # bob's own cap is untouched
        finally:
            first.close()
            second.close()
        freed = time.monotonic() + 5                                  # closing one frees its slot
        while True:
            with alice.stream("GET", f"/jobs/{jobs['alice']}/events", timeout=5) as again:
                if again.status_code == 200 or time.monotonic() > freed:
                    assert again.status_code == 200
                    break
            time.sleep(0.2)


def test_a_forged_forwarded_for_from_loopback_is_not_believed(served, tokens):
    with served.client(tokens["bob"][1], **{"X-Forwarded-For": FORGED}) as bob:
        assert bob.put("/access", json={"rules": ["my-ip"]}).json()["rules"] == ["127.0.0.1/32"]
        bob.put("/access", json={"rules": None})
    with served.client("e2e_forged-token", **{"X-Forwarded-For": FORGED}) as nobody:
        assert nobody.get("/me").status_code == 401
    with served.client(tokens["root"][1]) as root:
        newest = root.get("/audit", params={"limit": 5}).json()
    assert newest and all(FORGED not in str(entry) for entry in newest)
    assert any(entry.get("address") == "127.0.0.1" for entry in newest)


def test_the_configured_proxys_forwarded_for_is_believed(engine, tokens):
    # uvicorn in this process with the options `e2e serve` passes (a second serve process costs seconds)
    server = Served(engine.settings.model_copy(update={"trusted_proxies": ["127.0.0.0/8"]}))
    try:
        with httpx.Client(base_url=server.url + "/api/v1", headers={
                "Authorization": f"Bearer {tokens['bob'][1]}", "X-Forwarded-For": FORGED}) as bob:
            assert bob.put("/access", json={"rules": ["my-ip"]}).json()["rules"] == [f"{FORGED}/32"]
            bob.put("/access", json={"rules": None})
    finally:
        server.stop()


def test_cross_site_login_and_logout_are_refused_same_origin_forms_work(api, tokens):
    evil = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    with httpx.Client(base_url=api.url, follow_redirects=False, timeout=30) as web:
        forged = web.post("/ui/login", data={"token": tokens["alice"][1]}, headers=evil)
        assert forged.status_code == 403 and "Cross-site login refused" in forged.text
        assert "e2e_token" not in web.cookies                            # login CSRF: no session planted
        old = web.post("/ui/login", data={"token": tokens["alice"][1]}, headers={"Origin": "https://evil.example"})
        assert old.status_code == 403                                     # a browser without Sec-Fetch-Site
        ours = web.post("/ui/login", data={"token": tokens["alice"][1]},
                        headers={"Origin": api.url, "Sec-Fetch-Site": "same-origin"})
        assert ours.status_code == 303 and web.cookies.get("e2e_token")
        refused = web.post("/ui/logout", headers=evil)
        assert refused.status_code == 403 and "Cross-site logout refused" in refused.text
        assert web.get("/ui/").status_code == 200                        # still logged in
        forged_api = web.post("/ui/submit", json={"text": "name: x"},
                              headers={"X-Requested-With": "x", "Sec-Fetch-Site": "cross-site"})
        assert forged_api.status_code == 403 and "cross-site" in forged_api.json()["error"]
        out = web.post("/ui/logout", headers={"Origin": api.url})
        assert out.status_code == 303 and web.get("/ui/").status_code == 303
