"""Directory transfer between the head node and a node: rsync over ssh when both have it, SFTP otherwise.

Transfers merge, and the newer copy of a file wins (rsync --update): every node of a run gets the whole run
directory, so a node's stale copy of a file another node rewrote (a rank's output, a log) must never
replace the newer one when the directories are gathered back, nor the head's stale copy a node's output
when a restart stages the directory in again.

With a job account (a root engine running jobs as their owners), the node side of every transfer runs as the
account (rsync's --rsync-path drops to it): staging writes into the job's directories with the job's own rights,
so a link the job planted there leads nowhere it could not write itself, and what goes back is only what the
account can read. On the head, what comes back is the account's (--chown) without set-id bits, and links that
point out of the tree are not copied (--safe-links): nothing the job wrote makes root follow it elsewhere.
SFTP (as the engine's login) cannot do that, so staging for an account needs rsync on both sides.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import paramiko

from orchestrator.model.errors import BackendError
from orchestrator.model.identity import Account

if TYPE_CHECKING:
    from orchestrator.cluster.base import Node
    from orchestrator.cluster.ssh import SSHBackend

TRANSFER_TIMEOUT = 6 * 3600   # wall-clock bound of one directory transfer; stalls end sooner via --timeout


def ssh_command(backend: SSHBackend, node: Node) -> list[str]:
    """The OpenSSH client command rsync uses: same key, same managed known_hosts, strict, never prompting."""
    spec, inv = backend.spec(node), backend.config
    return ["ssh", "-p", str(spec.port), "-l", spec.user, "-i", str(spec.key_file),
            "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={inv.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(inv.connect_timeout)}",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]


def rsync_usable(backend: SSHBackend, node: Node) -> bool:
    if shutil.which("rsync") is None or shutil.which("ssh") is None:
        return False
    return backend.run(node, ["sh", "-c", "command -v rsync"], check=False).returncode == 0


def _remote(backend: SSHBackend, node: Node, path: Path) -> str:
    # rsync hands the remote path to the remote shell: quote it once more for that shell.
    address = backend.spec(node).address
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{shlex.quote(str(path))}/"


def _rsync(backend: SSHBackend, node: Node, src: str, dest: str, options: list[str] | None = None) -> None:
    argv = ["rsync", "-a", "--update", f"--timeout={int(backend.config.command_timeout)}", *(options or []),
            "-e", shlex.join(ssh_command(backend, node)), src, dest]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=TRANSFER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BackendError(f"rsync with node {node.name} took longer than {TRANSFER_TIMEOUT}s") from None
    if done.returncode != 0:
        raise BackendError(f"rsync with node {node.name} failed (exit {done.returncode}): "
                           f"{done.stderr.decode(errors='replace').strip()[-500:]}")


def _as_account(backend: SSHBackend, node: Node, account: Account | None) -> Account | None:
    """The account the node side must run as (None: the engine's login, as is); it needs rsync."""
    if account is None or not backend.needs_drop(node, account):
        return None
    if not rsync_usable(backend, node):
        raise BackendError(f"staging files of {account.name} to node {node.name} needs rsync on the head "
                           "and on the node (SFTP would write them as the engine's login)")
    return account


def _node_rsync(backend: SSHBackend, node: Node, account: Account) -> str:
    return f"--rsync-path={shlex.join(backend.as_job(node, account, ['rsync']))}"


def push_tree(backend: SSHBackend, node: Node, src: Path, dest: Path, account: Account | None = None) -> None:
    """Copy a head-node directory to the node (merging into dest), as the account on the node when given."""
    dropped = _as_account(backend, node, account)
    if dropped is not None:
        # The engine makes only what is missing (a missing dest it makes and gives to the account: mkdir
        # never follows a link, chown -h neither); everything in dest the account writes, with its own rights.
        # Folders above it are made passable, not listable (0711); the job's files are private to it (o-rwx).
        script = ('[ -d "$1" ] || (umask 066 && mkdir -p -- "$1"); '
                  '[ -e "$2" ] || [ -L "$2" ] || { mkdir -m 0700 -- "$2" && chown -h -- "$3" "$2"; }')
        backend.run(node, ["sh", "-c", script, "sh", Path(dest).parent, dest, f"{dropped.uid}:{dropped.gid}"])
        _rsync(backend, node, f"{src}/", _remote(backend, node, dest),
               ["--no-owner", "--no-group", "--chmod=o-rwx", _node_rsync(backend, node, dropped)])
        return
    backend.run(node, ["mkdir", "-p", "--", dest])
    if rsync_usable(backend, node):
        _rsync(backend, node, f"{src}/", _remote(backend, node, dest))
        return
    sftp = backend.conn(node).sftp()
    try:
        _put(sftp, Path(src), PurePosixPath(dest))
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise BackendError(f"copying {src} to node {node.name} failed: {exc}") from None


def pull_tree(backend: SSHBackend, node: Node, src: Path, dest: Path, account: Account | None = None) -> None:
    """Copy a node's directory into a head-node directory (merging); a missing source copies nothing.
    With an account: read on the node as it, and the head's copy is its (no set-id bits, no escaping links)."""
    Path(dest).mkdir(parents=True, exist_ok=True)
    if not backend.exists(node, src):
        return
    dropped = _as_account(backend, node, account)
    if dropped is not None:
        _rsync(backend, node, _remote(backend, node, src), f"{dest}/",
               ["--safe-links", "--numeric-ids", f"--chown={dropped.uid}:{dropped.gid}", "--chmod=ug-s",
                _node_rsync(backend, node, dropped)])
        return
    if rsync_usable(backend, node):
        _rsync(backend, node, _remote(backend, node, src), f"{dest}/")
        return
    sftp = backend.conn(node).sftp()
    try:
        _get(sftp, PurePosixPath(src), Path(dest))
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise BackendError(f"copying {src} from node {node.name} failed: {exc}") from None


def _kept(dest: os.stat_result | paramiko.SFTPAttributes | None, src: os.stat_result | paramiko.SFTPAttributes) -> bool:
    """rsync --update's rule: the destination's file stays when it is newer, or as old and as large.
    SFTP times are whole seconds, so both sides are compared at that resolution."""
    if dest is None:
        return False
    dest_time, src_time = int(dest.st_mtime or 0), int(src.st_mtime or 0)
    return dest_time > src_time or (dest_time == src_time and dest.st_size == src.st_size)


def _remote_files(sftp: paramiko.SFTPClient, path: PurePosixPath) -> dict[str, paramiko.SFTPAttributes]:
    """What a node's directory holds (one round trip per directory, not one per file)."""
    try:
        return {attr.filename: attr for attr in sftp.listdir_attr(str(path))}
    except FileNotFoundError:
        return {}


def _put(sftp: paramiko.SFTPClient, src: Path, dest: PurePosixPath) -> None:
    there = _remote_files(sftp, dest)
    for entry in os.scandir(src):
        target = str(dest / entry.name)
        if entry.is_file(follow_symlinks=False) and _kept(there.get(entry.name), entry.stat()):
            continue
        if entry.is_dir(follow_symlinks=False):
            try:
                sftp.mkdir(target)
            except OSError:
                pass  # exists already: merge
            _put(sftp, Path(entry.path), dest / entry.name)
        elif entry.is_file(follow_symlinks=False):
            sftp.put(entry.path, target)
            info = entry.stat()
            sftp.chmod(target, stat.S_IMODE(info.st_mode))
            sftp.utime(target, (info.st_atime, info.st_mtime))


def _get(sftp: paramiko.SFTPClient, src: PurePosixPath, dest: Path) -> None:
    for attr in sftp.listdir_attr(str(src)):
        target = dest / attr.filename
        if stat.S_ISDIR(attr.st_mode or 0):
            target.mkdir(exist_ok=True)
            _get(sftp, src / attr.filename, target)
        elif stat.S_ISREG(attr.st_mode or 0):
            if _kept(target.stat() if target.exists() else None, attr):
                continue
            sftp.get(str(src / attr.filename), str(target))
            os.chmod(target, stat.S_IMODE(attr.st_mode))
            os.utime(target, (attr.st_atime, attr.st_mtime))
