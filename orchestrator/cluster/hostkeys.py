"""The managed known_hosts file: strict host-key checks with fingerprints, and the explicit trust step."""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from pathlib import Path

import paramiko

from orchestrator.cluster.base import HostKeyRefused
from orchestrator.model.errors import BackendError


class HostKeyError(HostKeyRefused):
    """A node's host key is unknown or differs from the trusted one: nothing is sent to that node."""


class HostKeyUnknown(HostKeyError):
    reason = "unknown SSH host key"


class HostKeyChanged(HostKeyError):
    reason = "changed SSH host key"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint (what `ssh-keygen -lf` prints), so admins can compare them."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_entry(address: str, port: int) -> str:
    """The known_hosts name of a host: bare for port 22, else [address]:port (as OpenSSH writes it)."""
    return address if port == 22 else f"[{address}]:{port}"


def trusted_keys(known_hosts: Path, address: str, port: int) -> dict[str, paramiko.PKey]:
    """The trusted keys of a host by key type (empty when the host is not in the file)."""
    keys = paramiko.HostKeys()
    if known_hosts.exists():
        try:
            keys.load(str(known_hosts))
        except (OSError, paramiko.SSHException, paramiko.hostkeys.InvalidHostKey) as exc:
            raise BackendError(f"cannot read known_hosts {known_hosts}: {exc}") from None
    return dict(keys.lookup(host_entry(address, port)) or {})


def verify(known_hosts: Path, node: str, address: str, port: int, presented: paramiko.PKey) -> None:
    """Accept only the exact trusted key; otherwise refuse, naming the node and both fingerprints."""
    trusted = trusted_keys(known_hosts, address, port)
    name = presented.get_name()
    if not trusted:
        raise HostKeyUnknown(
            f"host key of node {node} ({host_entry(address, port)}) is not trusted: it presents {name} "
            f"{fingerprint(presented)}. Compare with `ssh-keygen -lf` on the node, then run "
            f"`e2e nodes trust {node}` (known_hosts: {known_hosts})")
    if trusted.get(name) == presented:
        return
    known = ", ".join(f"{t} {fingerprint(k)}" for t, k in trusted.items())
    raise HostKeyChanged(
        f"HOST KEY CHANGED for node {node} ({host_entry(address, port)}): known_hosts trusts {known}, "
        f"the node presents {name} {fingerprint(presented)}. Someone may be impersonating the node; if the "
        f"change is expected (reinstall), run `e2e nodes trust {node} --replace` (known_hosts: {known_hosts})")


def trust(known_hosts: Path, address: str, port: int, key: paramiko.PKey, replace: bool = False) -> None:
    """Record key as the host's trusted key (atomically); without replace, a different existing key is kept."""
    keys = paramiko.HostKeys()
    if known_hosts.exists():
        keys.load(str(known_hosts))
    entry = host_entry(address, port)
    current = keys.lookup(entry) or {}
    if current and not replace and any(k != key for k in current.values()):
        raise HostKeyChanged(f"{entry} already has a different trusted key; pass --replace to replace it")
    if replace and entry in keys:
        del keys[entry]
    keys.add(entry, key.get_name(), key)
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=known_hosts.parent, prefix=".known_hosts.")
    os.close(fd)
    try:
        keys.save(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, known_hosts)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
