"""Reused ssh connections to nodes (paramiko): strict host keys, TCP_NODELAY, keepalives, deadlines on every call."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from orchestrator.cluster.base import NodeUnreachable
from orchestrator.cluster.hostkeys import HostKeyError, trusted_keys, verify
from orchestrator.cluster.inventory import ComputeNode, Inventory
from orchestrator.model.errors import BackendError


class NodeAuthFailed(BackendError):
    """The node refused the engine's key for the configured user."""


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: bytes


class Connection:
    """One authenticated transport to one node, reconnected when it drops; safe to share between threads."""

    def __init__(self, node: ComputeNode, inventory: Inventory) -> None:
        self.node, self.inventory = node, inventory
        self._lock = threading.Lock()
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def describe(self) -> str:
        return f"node {self.node.name} ({self.node.user}@{self.node.address}:{self.node.port})"

    # -- connection
    def transport(self, deadline: float) -> paramiko.Transport:
        with self._lock:
            if self._transport is not None and self._transport.is_active():
                return self._transport
            self._drop()
            self._transport = self._connect(max(0.1, min(self.inventory.connect_timeout, deadline - time.monotonic())))
            return self._transport

    def _connect(self, timeout: float) -> paramiko.Transport:
        node = self.node
        try:
            sock = socket.create_connection((node.address, node.port), timeout=timeout)
        except OSError as exc:
            raise NodeUnreachable(f"{self.describe()} is unreachable: {exc.strerror or exc}") from None
        # Nagle + delayed ACKs add ~40 ms to every request/response otherwise (paramiko sets neither).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = transport.auth_timeout = transport.handshake_timeout = timeout
        try:
            trusted = trusted_keys(self.inventory.known_hosts, node.address, node.port)
            if trusted:  # ask for the key type we trust, so a node with several keys shows that one
                options = transport.get_security_options()
                first = [t for t in options.key_types if t in trusted]
                options.key_types = first + [t for t in options.key_types if t not in first]
            transport.start_client(timeout=timeout)
            verify(self.inventory.known_hosts, node.name, node.address, node.port,
                   transport.get_remote_server_key())
            transport.auth_publickey(node.user, load_key(node.key_file))
        except HostKeyError:
            transport.close()
            raise
        except paramiko.AuthenticationException:
            transport.close()
            raise NodeAuthFailed(f"{self.describe()} refused the key {node.key_file} "
                                 f"(authentication failed for user {node.user})") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise NodeUnreachable(f"{self.describe()}: ssh handshake failed: {exc or type(exc).__name__}") from None
        if self.inventory.keepalive:
            transport.set_keepalive(self.inventory.keepalive)
        return transport

    def _drop(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:  # noqa: BLE001 - closing a dead channel may fail any way it likes
                pass
        if self._transport is not None:
            self._transport.close()
        self._transport = self._sftp = None

    def close(self) -> None:
        with self._lock:
            self._drop()

    # -- commands
    def run(self, command: str, timeout: float | None = None, stdin: bytes | None = None) -> Completed:
        """Run a shell command line (built with shlex) and collect its output, all within the deadline."""
        timeout = timeout or self.inventory.command_timeout
        deadline = time.monotonic() + timeout
        chan = self._open_channel(deadline)
        # exec_command waits for the server's reply with no timeout of its own: a watchdog closes the
        # channel at the deadline, which wakes it with an error instead of hanging on a frozen node.
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), chan.close)
        watchdog.daemon = True
        watchdog.start()
        try:
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            return self._collect(chan, deadline, command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._forget_if_dead()
            if time.monotonic() >= deadline:
                raise NodeUnreachable(f"{self.describe()} did not answer within {timeout:g}s") from None
            raise NodeUnreachable(f"{self.describe()}: {exc or type(exc).__name__}") from None
        finally:
            watchdog.cancel()
            chan.close()

    def _open_channel(self, deadline: float, kind: str = "session",
                      dest: tuple[str, int] | None = None) -> paramiko.Channel:
        for attempt in (1, 2):  # a kept connection may have died since its last use: reconnect once
            transport = self.transport(deadline)
            try:
                return transport.open_channel(kind, dest, ("127.0.0.1", 0) if dest else None,
                                              timeout=max(0.1, deadline - time.monotonic()))
            except (paramiko.SSHException, OSError, EOFError) as exc:
                if dest is not None and isinstance(exc, paramiko.ChannelException):
                    raise  # the node answered and said no (nothing listens at dest): the connection is fine
                self.close()
                if attempt == 2 or time.monotonic() >= deadline:
                    raise NodeUnreachable(f"{self.describe()}: cannot open a channel: {exc or 'timed out'}") from None
        raise AssertionError("unreachable")

    def _collect(self, chan: paramiko.Channel, deadline: float, command: str) -> Completed:
        """Drain stdout and stderr while waiting for the exit status, so a chatty command cannot block."""
        out, err = bytearray(), bytearray()
        while True:
            while chan.recv_ready():
                out += chan.recv(1 << 16)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(1 << 16)
            # sshd may send the exit status before the last output: done only once EOF (or close) came too.
            ended = chan.eof_received or chan.closed
            if chan.exit_status_ready() and ended and not chan.recv_ready() and not chan.recv_stderr_ready():
                status = chan.recv_exit_status()
                if status == -1:  # paramiko's "no status": the watchdog closed the channel at the deadline
                    raise paramiko.SSHException("the channel closed without an exit status")
                return Completed(status, bytes(out), bytes(err))
            if chan.closed and not chan.exit_status_ready():
                raise paramiko.SSHException("the channel closed without an exit status")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NodeUnreachable(f"{self.describe()} did not finish {command.split()[0]!r} in time")
            if ended:  # the pipe stays readable after EOF: wait for the exit status (or close) instead
                chan.status_event.wait(min(remaining, 0.05))
            else:  # the channel's pipe wakes us on data and on EOF; capped so the exit status is seen promptly
                select.select([chan], [], [], min(remaining, 0.005))

    # -- TCP to the node's own ports (ssh -L without a listener)
    def open_tcp(self, port: int, timeout: float | None = None) -> paramiko.Channel:
        """A direct-tcpip channel to 127.0.0.1:port as the node sees it: a socket-like stream (recv, sendall,
        close) to services bound to the node's loopback, such as Xvnc with -localhost."""
        timeout = timeout or self.inventory.command_timeout
        try:
            chan = self._open_channel(time.monotonic() + timeout, "direct-tcpip", ("127.0.0.1", int(port)))
        except paramiko.ChannelException as exc:
            if exc.code == paramiko.common.OPEN_FAILED_CONNECT_FAILED:
                raise ConnectionRefusedError(f"{self.describe()}: nothing listens on 127.0.0.1:{port}") from None
            raise BackendError(f"{self.describe()} refused a TCP channel to its port {port} ({exc.text}); "
                               "the node's sshd needs AllowTcpForwarding yes (or local)") from None
        chan.settimeout(timeout)
        return chan

    def _forget_if_dead(self) -> None:
        with self._lock:
            if self._transport is not None and not self._transport.is_active():
                self._drop()

    # -- files
    def sftp(self, timeout: float | None = None) -> paramiko.SFTPClient:
        deadline = time.monotonic() + (timeout or self.inventory.command_timeout)
        transport = self.transport(deadline)
        with self._lock:
            if self._sftp is None or self._sftp.sock.closed:
                try:
                    self._sftp = paramiko.SFTPClient.from_transport(transport)
                except (paramiko.SSHException, OSError, EOFError) as exc:
                    self._drop()
                    raise NodeUnreachable(f"{self.describe()}: sftp failed to start: {exc}") from None
            # SFTP reads through the channel, so the channel timeout bounds every SFTP request.
            self._sftp.get_channel().settimeout(timeout or self.inventory.command_timeout)
            return self._sftp

    def sftp_failed(self) -> None:
        """Called after an SFTP error that was not about the file: the next call starts afresh."""
        with self._lock:
            self._drop()


def load_key(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError:
        raise BackendError(f"ssh key {path} does not exist") from None
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise BackendError(f"cannot load ssh key {path}: {exc}") from None


# -- one pool per process: a Celery prefork child must never share its parent's sockets
_pool: dict[tuple, Connection] = {}
_pool_lock = threading.Lock()


def connection(node: ComputeNode, inventory: Inventory) -> Connection:
    """The kept connection to a node (created on first use, per process)."""
    key = (node.name, node.address, node.port, node.user, str(node.key_file), str(inventory.known_hosts))
    with _pool_lock:
        conn = _pool.get(key)
        if conn is None or conn.inventory != inventory:
            conn = _pool[key] = Connection(node, inventory)
        return conn


def close_all() -> None:
    with _pool_lock:
        conns = list(_pool.values())
        _pool.clear()
    for conn in conns:
        conn.close()


def _forget_after_fork() -> None:
    # The parent's transports have no reader thread in the child; closing them here could also disturb
    # the parent's sessions, so the child just drops its copies and connects anew on first use.
    global _pool_lock
    _pool.clear()
    _pool_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def fetch_host_key(node: ComputeNode, timeout: float) -> paramiko.PKey:
    """The host key a node presents (no login): what an admin compares before trusting it."""
    try:
        sock = socket.create_connection((node.address, node.port), timeout=timeout)
    except OSError as exc:
        raise NodeUnreachable(f"node {node.name} ({node.address}:{node.port}) is unreachable: "
                              f"{exc.strerror or exc}") from None
    transport = paramiko.Transport(sock)
    transport.banner_timeout = transport.handshake_timeout = timeout
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise NodeUnreachable(f"node {node.name}: ssh handshake failed: {exc}") from None
    finally:
        transport.close()
