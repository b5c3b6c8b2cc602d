"""Real notification receivers for tests and the bench: a webhook HTTP server (http.server in a thread) that
can fail a path's first N requests, and an SMTP server (aiosmtpd) that keeps every message."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float              # time.time() when the body was read


@dataclass
class WebhookReceiver:
    """POSTs to http://127.0.0.1:<port>/<path>; `fail[path] = n` answers the first n with 500."""

    fail: dict[str, int] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self
        self._cond = threading.Condition()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.time()
                with receiver._cond:
                    left = receiver.fail.get(self.path, 0)
                    if left:
                        receiver.fail[self.path] = left - 1
                    else:
                        receiver.received.append(Received(self.path, dict(self.headers), body, now))
                        receiver._cond.notify_all()
                self.send_response(500 if left else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float, path: str | None = None) -> list[Received]:
        """The first `count` accepted POSTs (to `path`, if given), waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self.received if path is None or r.path == path]
                if len(got) >= count or time.monotonic() > deadline:
                    return got
                self._cond.wait(max(0.0, min(0.5, deadline - time.monotonic())))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpReceiver:
    """An aiosmtpd server on a free loopback port keeping each message it accepts."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Message] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                receiver.messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        from orchestrator.worker.stack import free_port

        self.port = free_port()  # (aiosmtpd's readiness probe connects to the port it was given: not 0)
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def wait(self, count: int, timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.messages)

    def close(self) -> None:
        self.controller.stop()
