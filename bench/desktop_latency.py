"""Benchmark: keystroke -> framebuffer update on a job's desktop, through the API's proxy and through the head
node's web gateway directly, in the same run.

Starts a private engine (orchestrator.worker.stack.Stack, embedded Redis) and the API (uvicorn, in this process,
as `e2e serve` runs it) in a temporary E2E_HOME; submits one `sleep` job with the desktop on (Xvnc, openbox, an
xterm) and opens two RFB clients on it, each over a WebSocket as noVNC's is:
  * gateway: ws://127.0.0.1:<gateway port>/websockify?token=... (the head node's websockify, as before);
  * API:     ws://127.0.0.1:<API port>/desktop/<job>/websockify (bearer token; the API relays to Xvnc).
Both log in with VncAuth, ask for 32-bit raw pixels and a first full frame. Then N samples, interleaved and
alternating which goes first: drain the client (incremental update requests until 0.2 s pass with no update),
leave one incremental request outstanding, send a KeyEvent press+release ('a', then BackSpace, so the xterm's
line returns to what it was) and time until the first FramebufferUpdate with a rectangle arrives.
Prints p50/p90/max per path and whether the target (API p50 <= 100 ms) holds. Exit 0 whatever the figures.

    .venv/bin/python bench/desktop_latency.py --samples 40 [--json]
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.desktop import desktop_bench_args, percentile  # noqa: E402

TARGET_P50_MS = 100.0
KEYS = (0x61, 0xFF08)  # 'a', BackSpace


class WsStream:
    """The RFB byte stream over a WebSocket (websocket-client), with a buffer: frames need not match messages."""

    def __init__(self, url: str, headers: list[str]) -> None:
        import websocket

        self.ws = websocket.create_connection(url, subprotocols=["binary"], header=headers, timeout=10)
        self.buf = b""

    def recv(self, n: int) -> bytes:
        if not self.buf:
            self.ws.settimeout(10)
            self.buf = self.ws.recv()
            self.buf = self.buf.encode() if isinstance(self.buf, str) else self.buf
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def sendall(self, data: bytes) -> None:
        self.ws.send_binary(data)

    def readable(self, timeout: float) -> bool:
        """Whether a message starts within `timeout` seconds (only ever waits between messages)."""
        import websocket

        if self.buf:
            return True
        self.ws.settimeout(timeout)
        try:
            frame = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return False
        self.buf = frame.encode() if isinstance(frame, str) else frame
        return True

    def close(self) -> None:
        self.ws.close()


def read_exact(stream: WsStream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        data += stream.recv(n - len(data))
    return data


class Viewer:
    """A minimal RFB viewer: 32-bit raw pixels only, so every update's size is known without decoding."""

    def __init__(self, stream: WsStream, password: str) -> None:
        from orchestrator.desktop.rfb import handshake

        self.stream = stream
        info = handshake(stream, password)
        self.width, self.height = info.width, info.height
        stream.sendall(struct.pack(">B3xBBBBHHHBBB3x", 0, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0))  # SetPixelFormat
        stream.sendall(struct.pack(">BxHi", 2, 1, 0))  # SetEncodings: Raw only
        self.request(incremental=False)
        self.read_update()
        self.pointer(300, 200)  # over the xterm, so it has the focus whatever the window manager's policy

    def request(self, incremental: bool = True) -> None:
        self.stream.sendall(struct.pack(">BBHHHH", 3, int(incremental), 0, 0, self.width, self.height))

    def pointer(self, x: int, y: int) -> None:
        self.stream.sendall(struct.pack(">BBHH", 5, 0, x, y))

    def key(self, keysym: int) -> None:
        self.stream.sendall(struct.pack(">BBxxI", 4, 1, keysym) + struct.pack(">BBxxI", 4, 0, keysym))

    def read_update(self) -> int:
        """Read server messages until a FramebufferUpdate; its rectangle count."""
        while True:
            (kind,) = read_exact(self.stream, 1)
            if kind == 0:
                _, count = struct.unpack(">BH", read_exact(self.stream, 3))
                for _ in range(count):
                    _, _, w, h, encoding = struct.unpack(">HHHHi", read_exact(self.stream, 12))
                    if encoding == 0:
                        read_exact(self.stream, w * h * 4)
                return count
            if kind == 1:  # SetColourMapEntries
                _, _, n = struct.unpack(">BHH", read_exact(self.stream, 5))
                read_exact(self.stream, 6 * n)
            elif kind == 3:  # ServerCutText
                (length,) = struct.unpack(">3xI", read_exact(self.stream, 7))
                read_exact(self.stream, length)
            elif kind != 2:  # Bell has no body; anything else we did not ask for
                raise RuntimeError(f"unexpected RFB message type {kind}")

    def drain(self) -> None:
        """Take every pending change, leaving one incremental request outstanding and unanswered."""
        self.request()
        while self.stream.readable(0.2):
            self.read_update()
            self.request()

    def keystroke(self, keysym: int) -> float:
        """Seconds from sending a key press+release to the first update that shows something."""
        self.drain()
        started = time.perf_counter()
        self.key(keysym)
        while not self.read_update():
            self.request()
        return time.perf_counter() - started


def serve_api(settings, port: int | None = None):
    import uvicorn

    from orchestrator.api.app import create_app
    from orchestrator.worker.stack import free_port

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    return server, port


def main() -> int:
    args = desktop_bench_args(__doc__, 40, "keystrokes per path", flag="--samples")
    if args is None:
        return 2
    home = Path(tempfile.mkdtemp(prefix="e2e-bench-desktop-latency-"))
    os.environ["E2E_HOME"] = str(home)
    os.chmod(home, 0o711)  # a job account (root engine) passes through to its job's folders
    for var in ("REDIS_URL", "E2E_REDIS_URL"):
        os.environ.pop(var, None)
    from orchestrator.control.client import Client
    from orchestrator.desktop.secrets import DesktopSecrets
    from orchestrator.desktop.service import desktop_record
    from orchestrator.model.settings import Settings
    from orchestrator.worker.stack import Stack

    settings = Settings(home=home, local_nodes=1, local_cores_per_node=1)
    stack = Stack(settings)
    times: dict[str, list[float]] = {"gateway": [], "API": []}
    server = None
    try:
        stack.start()
        server, api_port = serve_api(settings)
        client = Client(settings, user="bench", admin=False)
        # a root engine runs no job as root: the bench user's jobs run as the suite's job account, if any
        run_as = os.environ.get("E2E_RUN_AS") or ("e2e-jobs" if os.geteuid() == 0 else "")
        token = client.store.users.create("bench", os_user=run_as)
        job_id = client.submit_data({"name": "bench-latency",
                                     "solver": {"name": "command", "command": ["sleep", "900"]},
                                     "desktop": {"enabled": True, "geometry": "1024x768", "depth": 24}})
        try:
            rec = desktop_record(client.wait(job_id, lambda d: desktop_record(d).state in ("ready", "failed"),
                                             timeout=args.timeout))
        except TimeoutError:
            rec = desktop_record(client.status(job_id))
            print([(e.kind.value, e.data) for e in client.events(job_id)][-8:], file=sys.stderr)
        if rec.state != "ready":
            logs = sorted((home / "jobs" / job_id / "desktop").glob("*.log"))
            raise RuntimeError(f"the desktop did not start: {rec.state} {rec.reason}; "
                               + "; ".join(f"{p.name}: {p.read_text()[-400:]}" for p in logs))
        secret = DesktopSecrets(client.store).read(job_id)
        viewers = {
            "gateway": Viewer(WsStream(f"ws://127.0.0.1:{rec.web_port}/websockify?token={secret.token}", []),
                              secret.password),
            "API": Viewer(WsStream(f"ws://127.0.0.1:{api_port}/desktop/{job_id}/websockify",
                                   [f"Authorization: Bearer {token}"]), secret.password),
        }
        time.sleep(1.0)  # let the xterm settle (first prompt drawn)
        for i in range(args.samples):
            order = ("gateway", "API") if i % 2 == 0 else ("API", "gateway")
            for name in order:
                times[name].append(viewers[name].keystroke(KEYS[(i + (name == "API")) % 2]))
        for viewer in viewers.values():
            viewer.stream.close()
        client.terminate(job_id)
    finally:
        if server is not None:
            server.should_exit = True
        stack.stop()
        if not os.environ.get("BENCH_KEEP_HOME"):
            shutil.rmtree(home, ignore_errors=True)

    print(f"{'keystroke -> update':<22}{'n':>4}{'p50 ms':>9}{'p90 ms':>9}{'max ms':>9}")
    for name, values in times.items():
        ms = [v * 1000 for v in values]
        print(f"{'via ' + name:<22}{len(ms):>4}{percentile(ms, 50):>9.2f}{percentile(ms, 90):>9.2f}{max(ms):>9.2f}")
    api_p50 = percentile(times["API"], 50) * 1000
    print(f"API proxy overhead at p50: {api_p50 - percentile(times['gateway'], 50) * 1000:+.2f} ms")
    print(f"target API p50 <= {TARGET_P50_MS:g} ms: {'holds' if api_p50 <= TARGET_P50_MS else 'MISSED'} "
          f"({api_p50:.2f} ms)")
    if args.json:
        print(json.dumps({"gateway_s": times["gateway"], "api_s": times["API"], "api_p50_ms": api_p50,
                          "gateway_p50_ms": percentile(times["gateway"], 50) * 1000}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
