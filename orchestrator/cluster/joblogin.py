"""A job's own ssh login to a node: a key made for one job, accepted as the job's account while the job lives.

What needs it: a process of the job that runs on the engine host as the job's account and must reach the
node the job runs on (the live sync of a node without shared storage lists and copies the run directory over
ssh). It must not hold the engine's key (a root login on every node), so the engine makes it a key of its own:
- the private key, a known_hosts with the node's trusted host key and a one-node inventory (the account as
  the login user) go into a folder of the job's that only the account reads (the job's .sync/);
- the public key goes into the account's own ~/.ssh/authorized_keys on the node, written as the account (never
  root following a link the account put in its home), with `restrict` (no pty, no forwarding, no agent, no
  X11) and `from=` the head node's address when that is an IP address; one line per job, marked with the
  job's id, added and removed under flock so jobs of one account on one node never lose each other's lines;
- `revoke` removes the line when the job's sync has finished.
The key gives the account nothing it lacks: it logs in as itself, to a node running its job, from the head.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orchestrator.cluster.base import Node
from orchestrator.cluster.hostkeys import host_entry, trusted_keys
from orchestrator.cluster.identity import acting_as
from orchestrator.cluster.ssh import SSHBackend
from orchestrator.model.errors import BackendError
from orchestrator.model.identity import Account

KEY_FILE, KNOWN_HOSTS, INVENTORY = "node_key", "node_known_hosts", "node_inventory.yaml"
_TAG = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# $1 authorized_keys, $2 the marker of this job's line, $3 the new line (empty: remove only). The lock file
# sits beside it in the account's own ~/.ssh; the new file replaces the old in one rename.
_EDIT = ('umask 077 && d=$(dirname -- "$1") && mkdir -p -- "$d" && exec 9>>"$d/.e2e-keys.lock" && flock 9 && '
         't="$1.e2e-tmp.$$" && { if [ -f "$1" ]; then grep -vF -- "$2" "$1"; fi; '
         'if [ -n "$3" ]; then printf "%s\\n" "$3"; fi; } > "$t" && mv -f -- "$t" "$1"')


def marker(tag: str) -> str:
    return f"e2e-job-login:{tag}"


def grant(backend: SSHBackend, node: Node, account: Account, tag: str, folder: Path) -> Path:
    """Make the job's key in folder (the account's), authorise it on the node; the one-node inventory's path."""
    if not _TAG.match(tag):
        raise BackendError(f"not a job tag: {tag!r}")
    spec = backend.spec(node)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    trusted = trusted_keys(backend.config.known_hosts, spec.address, spec.port)
    if not trusted:
        raise BackendError(f"node {node.name} has no trusted host key: run `e2e nodes trust {node.name}` first")
    inventory = {
        "head": backend.config.head.model_dump(mode="json"),
        "known_hosts": str(folder / KNOWN_HOSTS),
        "connect_timeout": backend.config.connect_timeout, "command_timeout": backend.config.command_timeout,
        "keepalive": backend.config.keepalive,
        "nodes": [{**spec.model_dump(mode="json"), "user": account.name, "key_file": str(folder / KEY_FILE)}],
    }
    with acting_as(account):  # created by and for the account, in its folder: no link leads elsewhere
        _write_new(folder / KEY_FILE, pem)
        _write_new(folder / KNOWN_HOSTS, b"".join(
            f"{host_entry(spec.address, spec.port)} {kind} {key.get_base64()}\n".encode()
            for kind, key in trusted.items()))
        _write_new(folder / INVENTORY, yaml.safe_dump(inventory).encode())
    _edit(backend, node, account, tag, f"{_options(backend)} {public} {marker(tag)}")
    return folder / INVENTORY


def revoke(backend: SSHBackend, node: Node, account: Account, tag: str) -> None:
    """Remove the job's line from the account's authorized_keys on the node (nothing there: nothing to do)."""
    _edit(backend, node, account, tag, "")


def _edit(backend: SSHBackend, node: Node, account: Account, tag: str, line: str) -> None:
    path = backend.home_dir(node, account) / ".ssh" / "authorized_keys"
    backend.run(node, backend.as_job(node, account, ["sh", "-c", _EDIT, "sh", str(path), marker(tag), line]))


def _options(backend: SSHBackend) -> str:
    address = backend.config.head.address
    try:
        ipaddress.ip_address(address)
    except ValueError:  # a host name: sshd matches from= against names only with UseDNS, so none is given
        return "restrict"
    return f'restrict,from="{address}"'


def _write_new(path: Path, data: bytes) -> None:
    """A fresh private file (an older one from an earlier start is replaced, never written through)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
