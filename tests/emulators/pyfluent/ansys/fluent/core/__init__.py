"""Stands in for ansys-fluent-core (PyFluent) in tests: only `connect_to_fluent(...)` and the session's
`monitors.get_monitor_set_names()` / `monitors.get_monitor_set_data(monitor_set_name=...)`, with the real
signatures, talking to the Fluent emulator's server (tests/emulators/fluentserver.py) instead of gRPC.

Like the real one it reads the server-info file (line 1 `ip:port`, line 2 the password; PyFluent's
_parse_server_info_file) and, with cleanup_on_exit=False (the default of connect_to_fluent), never stops the
Fluent it attached to: dropping the session only closes the connection."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

__version__ = "0.0.0+e2e-emulator"


def _parse_server_info_file(file_name: str) -> tuple[str, int, str]:
    with open(file_name, encoding="utf-8") as fh:
        lines = fh.readlines()
    ip, _, port = lines[0].strip().rpartition(":")
    return ip, int(port), lines[1].strip()


class _Monitors:
    """The residual history the server streams, kept as it arrives."""

    def __init__(self, conn: socket.socket) -> None:
        self._iterations: list[int] = []
        self._values: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self.connected = True
        self._reader = conn.makefile("r", encoding="utf-8")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self._reader:
                row = json.loads(line)
                with self._lock:
                    self._iterations.append(row["iteration"])
                    for name, value in row["residual"].items():
                        self._values.setdefault(name, []).append(value)
        except (OSError, ValueError):
            pass
        self.connected = False

    @property
    def is_streaming(self) -> bool:  # PyFluent's MonitorsManager is a StreamingService; this one streams at once
        return True

    def get_monitor_set_names(self) -> list[str]:
        return ["residual"]

    def get_monitor_set_data(self, monitor_set_name: str, start_index: int = 0,
                             end_index: int | None = None) -> tuple[list[int], dict[str, list[float]]]:
        if not self.connected:
            raise RuntimeError("the connection to Fluent was lost")
        if monitor_set_name != "residual":
            raise ValueError(f"no monitor set {monitor_set_name!r}")
        with self._lock:
            return (self._iterations[start_index:end_index],
                    {name: values[start_index:end_index] for name, values in self._values.items()})


class Solver:
    """A solver session connected to a running Fluent."""

    def __init__(self, conn: socket.socket, cleanup_on_exit: bool) -> None:
        self._conn = conn
        self._cleanup_on_exit = cleanup_on_exit
        self.monitors = _Monitors(conn)

    def exit(self) -> None:  # the real exit() ends Fluent; the emulator's server has no such command
        raise NotImplementedError("the emulated session cannot stop Fluent")


def connect_to_fluent(ip: str | None = None, port: int | None = None, cleanup_on_exit: bool = False,
                      start_transcript: bool = True, server_info_file_name: str | None = None,
                      password: str | None = None, start_watchdog: bool | None = None, **_: Any) -> Solver:
    if server_info_file_name:
        ip, port, password = _parse_server_info_file(server_info_file_name)
    if not ip or not port:
        raise ValueError("connect_to_fluent needs ip and port, or server_info_file_name")
    conn = socket.create_connection((ip, port), timeout=10)
    conn.sendall((password or "").encode() + b"\n")
    answer = b""
    while not answer.endswith(b"\n") and len(answer) < 64:  # byte by byte: the history follows at once
        chunk = conn.recv(1)
        if not chunk:
            break
        answer += chunk
    if answer.strip() != b"ok":
        conn.close()
        raise RuntimeError("Fluent refused the connection: wrong password")
    conn.settimeout(None)
    return Solver(conn, cleanup_on_exit)
