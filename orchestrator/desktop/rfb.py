"""A minimal RFB (VNC) client: version handshake, VncAuth, ServerInit; says whether a viewer could log in."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Protocol

from orchestrator.desktop.vncauth import challenge_response

SECURITY_NONE, SECURITY_VNCAUTH = 1, 2


class Stream(Protocol):
    """A connected byte stream: a socket, or a paramiko channel through an SSH tunnel."""

    def recv(self, n: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class RFBError(Exception):
    """The server did not speak RFB as expected (not a VNC server, closed early, too many failures)."""


class AuthFailed(RFBError):
    """The server refused the password."""


@dataclass(frozen=True)
class ServerInfo:
    version: str
    width: int
    height: int
    name: str


def _read(stream: Stream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.recv(n - len(data))
        if not chunk:
            raise RFBError(f"the server closed the connection ({len(data)} of {n} bytes read)")
        data += chunk
    return data


def _reason(stream: Stream) -> str:
    (length,) = struct.unpack(">I", _read(stream, 4))
    return _read(stream, min(length, 4096)).decode(errors="replace")


def handshake(stream: Stream, password: str, shared: bool = True) -> ServerInfo:
    """Log in over an open stream with VncAuth; the server's desktop size and name. Raises AuthFailed or RFBError."""
    banner = _read(stream, 12)
    if not banner.startswith(b"RFB ") or not banner.endswith(b"\n"):
        raise RFBError(f"not an RFB server (banner {banner!r})")
    major, minor = int(banner[4:7]), int(banner[8:11])
    version = "3.8" if (major, minor) >= (3, 8) else ("3.7" if (major, minor) == (3, 7) else "3.3")
    stream.sendall(f"RFB 003.00{version[-1]}\n".encode())
    if version == "3.3":  # the server picks the security type itself
        (kind,) = struct.unpack(">I", _read(stream, 4))
        if kind == 0:
            raise RFBError(_reason(stream))  # e.g. "Too many security failures"
        kinds = [kind]
    else:
        (count,) = _read(stream, 1)
        if count == 0:
            raise RFBError(_reason(stream))
        kinds = list(_read(stream, count))
        if SECURITY_VNCAUTH not in kinds:
            raise RFBError(f"the server does not offer VncAuth (types {kinds})")
        stream.sendall(bytes([SECURITY_VNCAUTH]))
    if kinds[0] != SECURITY_VNCAUTH and version == "3.3":
        raise RFBError(f"the server chose security type {kinds[0]}, not VncAuth")
    stream.sendall(challenge_response(password, _read(stream, 16)))
    (result,) = struct.unpack(">I", _read(stream, 4))
    if result != 0:
        reason = _reason(stream) if version == "3.8" else "Authentication failure"
        raise AuthFailed(reason or "Authentication failure")
    stream.sendall(bytes([1 if shared else 0]))  # ClientInit: share the desktop with other viewers
    width, height = struct.unpack(">HH", _read(stream, 4))
    _read(stream, 16)  # pixel format
    (name_len,) = struct.unpack(">I", _read(stream, 4))
    name = _read(stream, min(name_len, 4096)).decode(errors="replace")
    return ServerInfo(version=version, width=width, height=height, name=name)


def authenticate(host: str, port: int, password: str, timeout: float = 5.0,
                 source: tuple[str, int] | None = None) -> ServerInfo:
    """Connect over TCP and log in; raises AuthFailed (wrong password), RFBError or OSError (nothing there)."""
    sock = socket.create_connection((host, port), timeout=timeout, source_address=source)
    try:
        return handshake(sock, password)
    finally:
        sock.close()
