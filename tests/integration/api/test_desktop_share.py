"""A view-only share link to a job's desktop, with the real pieces (Xvnc, openbox, xterm, the API's relay): the
owner makes it, another person opens it as often as needed until it expires, and what they type reaches
nothing, while the owner's own typing does (the control). Another user cannot make one."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from urllib.parse import parse_qs

import httpx
import pytest

from orchestrator.desktop.rfb import handshake
from orchestrator.model.paths import JobPaths
from tests.conftest import require
from tests.integration.conftest import wait_for
from tests.integration.desktop_helpers import WebSocketStream, require_desktop_tools, spec, wait_desktop

pytestmark = pytest.mark.integration

RETURN = 0xFF0D


def _type(stream: WebSocketStream, text: str) -> None:
    """A click on the xterm (the job panel, opened beside it, may hold the focus), then each key pressed and
    released, then Return."""
    for buttons in (0, 1, 0):
        stream.sendall(struct.pack(">BBHH", 5, buttons, 300, 200))
    for keysym in [ord(c) for c in text] + [RETURN]:
        stream.sendall(struct.pack(">BBxxI", 4, 1, keysym) + struct.pack(">BBxxI", 4, 0, keysym))


def _redeem(api_url: str, job_id: str, code: str) -> str:
    reply = httpx.post(f"{api_url}/desktop/{job_id}/link", json={"code": code},
                       headers={"X-Requested-With": "e2e"}, timeout=10)
    assert reply.status_code == 204, reply.text
    return reply.cookies["e2e_desktop"]


def test_a_view_only_share_link_opens_the_desktop_for_another_person_who_cannot_type(engine, api, http):
    require_desktop_tools()
    require(shutil.which("xdotool") is not None, "xdotool (apt-get install xdotool)")
    alice, bob = http("alice"), http("bob")
    job_id = alice.post("/jobs", json={"spec": spec("share", geometry="1024x768", depth=24)}).json()["id"]
    rec = wait_desktop(engine, job_id)
    assert rec.state == "ready", rec.reason
    work = JobPaths.for_job(engine.settings.root, job_id).work

    # another user gets nothing; a bad expiry is refused naming the field
    assert bob.post(f"/jobs/{job_id}/desktop/share", json={}).status_code == 404
    bad = alice.post(f"/jobs/{job_id}/desktop/share", json={"expires_in": 5})
    assert bad.status_code == 422 and "expires_in" in bad.text

    made = alice.post(f"/jobs/{job_id}/desktop/share", json={"expires_in": 600})
    assert made.status_code == 201, made.text
    link = made.json()
    assert link["view_only"] and link["expires_in"] == 600
    fragment = parse_qs(link["path"].split("#", 1)[1])
    code, view_password = fragment["code"][0], fragment["password"][0]
    assert fragment["view_only"] == ["1"]
    full_password = alice.get(f"/jobs/{job_id}/desktop").json()["password"]
    assert view_password != full_password

    # the person holding the link: no account, no token; the link works more than once (a reload)
    _redeem(api.url, job_id, code)
    cookie = _redeem(api.url, job_id, code)
    page = httpx.get(f"{api.url}/desktop/{job_id}/vnc.html", cookies={"e2e_desktop": cookie})
    assert page.status_code == 200 and b"noVNC" in page.content
    viewer = WebSocketStream(f"ws://127.0.0.1:{api.port}/desktop/{job_id}/websockify",
                             [f"Cookie: e2e_desktop={cookie}"])
    try:
        assert job_id in handshake(viewer, view_password).name  # the view-only login is accepted
        _type(viewer, "touch typed-by-viewer")
    finally:
        viewer.close()

    # the owner, with the full password over the same route, types the same way: that one arrives. The
    # terminal gets the focus first (the job panel, mapped after it, may hold it; openbox gives new windows
    # the focus)
    display = ":" + (work.parent / "desktop" / "display").read_text().strip()
    focus = subprocess.run(["xdotool", "search", "--sync", "--limit", "1", "--class", "xterm", "windowactivate",
                            "--sync"], env={**os.environ, "DISPLAY": display}, capture_output=True, text=True,
                           timeout=20)
    assert focus.returncode == 0, focus.stderr
    owner = WebSocketStream(f"ws://127.0.0.1:{api.port}/desktop/{job_id}/websockify",
                            [f"Cookie: e2e_desktop={_redeem(api.url, job_id, code)}"])
    try:
        handshake(owner, full_password)
        time.sleep(0.5)
        _type(owner, "touch typed-by-owner")
        try:
            wait_for(lambda: (work / "typed-by-owner").exists(), 20, "the owner's typing in the desktop's terminal")
        except AssertionError:
            display = ":" + (work.parent / "desktop" / "display").read_text().strip()
            tree = subprocess.run(["xwininfo", "-root", "-tree", "-display", display], capture_output=True,
                                  text=True).stdout
            named = "\n".join(line for line in tree.splitlines() if "\"" in line)
            raise AssertionError(f"the owner's typing did not arrive; named windows:\n{named}") from None
    finally:
        owner.close()
    assert not (work / "typed-by-viewer").exists(), "a view-only viewer's keys reached the terminal"

    # a one-time link still works once only, and an unknown code is refused
    once = alice.post(f"/jobs/{job_id}/desktop/link").json()["path"]
    once_code = parse_qs(once.split("#", 1)[1])["code"][0]
    _redeem(api.url, job_id, once_code)
    again = httpx.post(f"{api.url}/desktop/{job_id}/link", json={"code": once_code}, timeout=10)
    assert again.status_code == 403
    alice.post(f"/jobs/{job_id}/terminate")
