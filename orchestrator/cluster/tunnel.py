"""SSH local port forwarding through paramiko (ssh -L): a local port to a port on a node's loopback."""

from __future__ import annotations

import select
import socket
import threading
from pathlib import Path
from typing import Callable

import paramiko

from orchestrator.cluster.hostkeys import HostKeyChanged, HostKeyError, HostKeyUnknown, fingerprint, host_entry
from orchestrator.model.errors import BackendError


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """Never add a host key on the fly: an unknown one is refused, with the fingerprint to check."""

    def missing_host_key(self, client, hostname, key) -> None:
        raise HostKeyUnknown(f"host key of {hostname} is not in known_hosts: it presents {key.get_name()} "
                             f"{fingerprint(key)}. Compare it with the head node's, then add it to known_hosts")


def connect(host: str, port: int, user: str, known_hosts: Path | None = None,
            key_filename: str | None = None, timeout: float = 15,
            sock: socket.socket | None = None) -> paramiko.SSHClient:
    """An SSH connection whose host key must already be known (never added on the fly)."""
    client = paramiko.SSHClient()
    client.load_system_host_keys()
    if known_hosts is not None:
        try:
            client.load_host_keys(str(known_hosts))
        except OSError as exc:
            raise BackendError(f"cannot read known_hosts {str(known_hosts)!r}: {exc.strerror or exc}") from None
    client.set_missing_host_key_policy(_RefuseUnknown())
    try:
        client.connect(host, port=port, username=user, key_filename=key_filename, timeout=timeout,
                       allow_agent=key_filename is None, look_for_keys=key_filename is None, sock=sock)
    except HostKeyError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyChanged(
            f"HOST KEY CHANGED for {host_entry(host, port)}: known_hosts trusts {exc.expected_key.get_name()} "
            f"{fingerprint(exc.expected_key)}, the server presents {exc.key.get_name()} {fingerprint(exc.key)}. "
            "Someone may be impersonating the head node: nothing was sent") from None
    except paramiko.SSHException as exc:
        client.close()
        raise BackendError(f"ssh to {user}@{host}:{port} failed: {exc} (is the host key in known_hosts, "
                           "and your key registered with `e2e keys add`?)") from exc
    except OSError as exc:
        client.close()
        raise BackendError(f"cannot reach {host}:{port}: {exc}") from exc
    return client


def open_channel(client: paramiko.SSHClient, remote_port: int, origin: tuple[str, int] = ("127.0.0.1", 0)):
    """A stream to 127.0.0.1:remote_port as seen from the SSH server (socket-like: recv, sendall, close)."""
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise BackendError("the SSH connection is closed")
    return transport.open_channel("direct-tcpip", ("127.0.0.1", remote_port), origin)


def engine_known_hosts(inventory: Path | None) -> Path | None:
    """The host keys the engine trusts for its ssh nodes (`e2e nodes trust`), for tunnels to those nodes."""
    if inventory is None:
        return None
    from orchestrator.cluster.inventory import load_inventory

    known = load_inventory(inventory).known_hosts
    return known if known is not None and known.exists() else None


class Forwarder:
    """Listens on 127.0.0.1:local_port; every connection is carried to remote_port on the SSH server."""

    def __init__(self, client: paramiko.SSHClient, local_port: int, remote_port: int,
                 admit: Callable[[str], bool] | None = None, owns_client: bool = False) -> None:
        self.client, self.remote_port, self.admit, self.owns_client = client, remote_port, admit, owns_client
        self.listener = socket.create_server(("127.0.0.1", local_port))
        self.local_port = self.listener.getsockname()[1]
        self._stop = threading.Event()

    def serve_forever(self) -> None:
        self.listener.settimeout(0.5)
        while not self._stop.is_set():
            try:
                conn, addr = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            if self.admit is not None and not self.admit(addr[0]):
                conn.close()
                continue
            threading.Thread(target=self._pipe, args=(conn, addr), daemon=True).start()

    def start(self) -> Forwarder:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def wait(self) -> None:
        """Block until close() (or Ctrl-C); what `e2e desktop --tunnel --run` does while the tunnel is open."""
        while not self._stop.wait(0.5):
            if not (self.client.get_transport() and self.client.get_transport().is_active()):
                raise BackendError("the SSH connection of the tunnel closed")

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        if self.owns_client:
            self.client.close()

    def _pipe(self, conn: socket.socket, addr: tuple) -> None:
        try:
            chan = open_channel(self.client, self.remote_port, (addr[0], addr[1]))
        except (BackendError, paramiko.SSHException):
            conn.close()
            return
        try:
            while True:
                ready, _, _ = select.select([conn, chan], [], [], 1.0)
                if conn in ready:
                    data = conn.recv(65536)
                    if not data:
                        break
                    chan.sendall(data)
                if chan in ready:
                    data = chan.recv(65536)
                    if not data:
                        break
                    conn.sendall(data)
        except OSError:
            pass
        finally:
            chan.close()
            conn.close()
