"""The Fluent emulator's stand-in for Fluent's gRPC server (`fluent ... -sifile=F`): listens on a free TCP
port, writes the server-info file as Fluent does (line 1 `ip:port`, line 2 the password; mode 0600), and
streams the residual history to every client that presents the password (a wrong one is refused).

Protocol (the emulator's own, spoken by tests/emulators/pyfluent's connect_to_fluent): the client sends the
password and a newline; the server answers `refused` and closes, or `ok` followed by one JSON line per
iteration, `{"iteration": N, "residual": {name: value}}`: the history so far, then each new iteration."""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading

from emulib import hostname

HISTORY_MAX = 100_000  # iterations kept for a client that attaches late (the real server keeps all)


class MonitorServer:
    def __init__(self, server_info: str) -> None:
        self.password = secrets.token_urlsafe(24)
        self.history: list[str] = []
        self.clients: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("0.0.0.0", 0))  # a free port, as Fluent picks one
        self.listener.listen(8)
        port = self.listener.getsockname()[1]
        try:
            address = socket.gethostbyname(hostname())
        except OSError:
            address = "127.0.0.1"
        # private from the first byte: the password must never be readable by another account
        fd = os.open(server_info, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{address}:{port}\n{self.password}\n")
        self.address = f"{address}:{port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.listener.accept()
            threading.Thread(target=self._greet, args=(conn,), daemon=True).start()

    def _greet(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            presented = conn.makefile("rb").readline(1024).rstrip(b"\r\n")
            if not secrets.compare_digest(presented, self.password.encode()):
                conn.sendall(b"refused\n")
                conn.close()
                return
            conn.settimeout(None)
            with self.lock:
                conn.sendall(b"ok\n" + "".join(self.history).encode())
                self.clients.append(conn)
        except OSError:
            conn.close()

    def publish(self, iteration: int, residual: dict[str, float]) -> None:
        line = json.dumps({"iteration": iteration, "residual": residual}) + "\n"
        with self.lock:
            self.history.append(line)
            del self.history[:-HISTORY_MAX]
            for conn in list(self.clients):
                try:
                    conn.sendall(line.encode())
                except OSError:  # a client that went away (the monitor closed): the run goes on
                    self.clients.remove(conn)
                    conn.close()
