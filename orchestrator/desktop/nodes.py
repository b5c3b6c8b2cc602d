"""What the desktop needs from a head node beyond the backend contract, with the local backend's answers.

A backend may offer these as methods; without them the head node's filesystem is this machine's (the local
backend: virtual nodes on one host), which is all the engine's other steps assume today too.
  make_dirs(node, path, mode)   create a directory (and parents) on the node
  write_private(node, path, data)  write_bytes for secrets: mode 0600 before the data is in the file
  home_dir(node) -> Path        the job user's home on the node (authorized_keys, window-manager settings)
  read_as(node, path, account)  read a file as the account (its own ~/.ssh: root must not follow its links)
Where a helper takes an account (a root engine running jobs as their owners), a backend with real nodes gets it
too (make_dirs, write_private, home_dir, ssh_endpoint take `account=`): the owner's home, written as the owner.
  open_tcp(node, port)          a stream to 127.0.0.1:port on the node (e.g. a paramiko direct-tcpip channel)
  ssh_endpoint(node)            (user, host, port) a person's ssh client uses to reach the node
  apply_firewall(node, path)    load an nftables file on the node (real clusters only)
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

from orchestrator.cluster.base import ClusterBackend, Node
from orchestrator.model.errors import BackendError
from orchestrator.model.identity import Account

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(node: Node) -> bool:
    """Whether the node is this machine reached over loopback (the local backend's virtual nodes)."""
    if node.address in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(node.address).is_loopback
    except ValueError:
        return False


def make_dirs(backend: ClusterBackend, node: Node, path: Path, mode: int = 0o700,
              account: Account | None = None) -> None:
    hook = getattr(backend, "make_dirs", None)
    if hook is not None:
        hook(node, path, mode, **_as(account))
        return
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)


def write_private(backend: ClusterBackend, node: Node, path: Path, data: bytes,
                  account: Account | None = None) -> None:
    """A file only its owner can read (VNC passwords, authorized_keys), never readable by others for a moment."""
    hook = getattr(backend, "write_private", None)
    if hook is not None:
        hook(node, path, data, **_as(account))
        return
    tmp = path.with_name(f".{path.name}.e2e-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fd, 0o600)  # an existing temp file keeps its old mode otherwise
        fh.write(data)
    os.replace(tmp, path)


def home_dir(backend: ClusterBackend, node: Node, account: Account | None = None) -> Path:
    """The job user's home; a virtual node gets its own under its directory, leaving this machine's alone."""
    hook = getattr(backend, "home_dir", None)
    return hook(node, **_as(account)) if hook is not None else node.root / "home"


def read_private(backend: ClusterBackend, node: Node, path: Path, account: Account | None = None) -> bytes | None:
    """A file of the account's own (None if missing), read as it where the backend can: a link the account put
    in its home then leads only where it may read itself."""
    hook = getattr(backend, "read_as", None)
    if account is not None and hook is not None:
        return hook(node, path, account)
    return backend.read_bytes(node, path)


def _as(account: Account | None) -> dict[str, Account]:
    """The keyword a backend hook takes the account by; none without one (the hooks' old signatures)."""
    return {} if account is None else {"account": account}


def own_home(backend: ClusterBackend) -> bool:
    """Whether sessions on this backend's nodes need HOME pointed at the virtual node's home."""
    return getattr(backend, "home_dir", None) is None


def open_tcp(backend: ClusterBackend, node: Node, port: int, timeout: float = 5.0) -> Any:
    """A connected stream to a port the node listens on at 127.0.0.1 (Xvnc is bound to localhost)."""
    hook = getattr(backend, "open_tcp", None)
    if hook is not None:
        return hook(node, port)
    if not is_loopback(node):
        raise BackendError(f"backend {backend.name} offers no way to reach port {port} on {node.name}")
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def ssh_endpoint(backend: ClusterBackend, node: Node, account: Account | None = None) -> tuple[str, str, int]:
    hook = getattr(backend, "ssh_endpoint", None)
    if hook is not None:
        return hook(node, **_as(account))
    return getpass.getuser(), public_host(node), 22


def listen_host(node: Node) -> str:
    """Where the web gateway listens: loopback for a virtual node on this machine, else every address."""
    return "127.0.0.1" if is_loopback(node) else "::"


def public_host(node: Node) -> str:
    """The host part of the desktop's URL."""
    return "127.0.0.1" if is_loopback(node) else node.address


def apply_firewall(backend: ClusterBackend, node: Node, path: Path) -> bool:
    hook = getattr(backend, "apply_firewall", None)
    if hook is None:
        return False  # virtual nodes share this machine's firewall: rules are rendered, never loaded here
    hook(node, path)
    return True
