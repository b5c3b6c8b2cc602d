"""The clipboard both ways through the web client's route (the API's relay to the job's real Xvnc): text a
browser sends (RFB ClientCutText, what noVNC's clipboard panel sends) is the desktop's clipboard, read there with
xclip; text copied on the desktop reaches the browser (ServerCutText)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import time

import pytest

from orchestrator.desktop.rfb import handshake
from orchestrator.model.paths import JobPaths
from tests.conftest import require
from tests.integration.conftest import wait_for
from tests.integration.desktop_helpers import WebSocketStream, require_desktop_tools, spec, wait_desktop

pytestmark = pytest.mark.integration


def _server_cut_text(stream: WebSocketStream, timeout: float) -> str:
    """Read server messages until a ServerCutText; its text (nothing else was asked for: no update requests)."""
    stream.ws.settimeout(timeout)
    while True:
        (kind,) = _read(stream, 1)
        if kind == 3:
            (length,) = struct.unpack(">3xI", _read(stream, 7))
            return _read(stream, length).decode("latin-1")
        if kind == 1:  # SetColourMapEntries
            _, _, n = struct.unpack(">BHH", _read(stream, 5))
            _read(stream, 6 * n)
        elif kind != 2:  # Bell has no body
            raise AssertionError(f"unexpected RFB message {kind} (no update was requested)")


def _read(stream: WebSocketStream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        data += stream.recv(n - len(data))
    return data


def test_the_clipboard_goes_both_ways_through_the_api(engine, api, tokens, http):
    require_desktop_tools()
    require(shutil.which("xclip") is not None, "xclip (apt-get install xclip)")
    alice = http("alice")
    job_id = alice.post("/jobs", json={"spec": spec("clip", geometry="800x600")}).json()["id"]
    rec = wait_desktop(engine, job_id)
    assert rec.state == "ready", rec.reason
    display = ":" + (JobPaths.for_job(engine.settings.root, job_id).root / "desktop" / "display").read_text().strip()
    password = alice.get(f"/jobs/{job_id}/desktop").json()["password"]
    stream = WebSocketStream(f"ws://127.0.0.1:{api.port}/desktop/{job_id}/websockify",
                             [f"Authorization: Bearer {tokens['alice'][1]}"])
    holder = None
    try:
        handshake(stream, password)
        # browser -> desktop
        text = "copied in the browser: ü 42"
        stream.sendall(struct.pack(">B3xI", 6, len(text.encode("latin-1"))) + text.encode("latin-1"))

        def pasted() -> str:
            out = subprocess.run(["xclip", "-o", "-selection", "clipboard", "-display", display],
                                 capture_output=True, timeout=10)
            return out.stdout.decode("utf-8", "replace") if out.returncode == 0 else ""  # Xvnc serves UTF-8
        assert wait_for(lambda: pasted() == text, 20, "the browser's text on the desktop's clipboard")

        # desktop -> browser: a program on the desktop takes the clipboard (xclip holds it while it runs)
        copied = f"copied on the desktop {time.time():.0f}"
        holder = subprocess.Popen(["xclip", "-quiet", "-i", "-selection", "clipboard", "-display", display],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        holder.stdin.write(copied.encode())
        holder.stdin.close()
        assert _server_cut_text(stream, 20) == copied
    finally:
        stream.close()
        if holder is not None:
            holder.kill()
            holder.wait()
        alice.post(f"/jobs/{job_id}/terminate")
