"""Files and processes a job owns, handled by a root engine on this machine without trusting them: ownership
hand-over, reads and writes that never follow a symlink the job planted, and processes told apart by uid.

A job's tree under $E2E_HOME is the job's to change (it owns it), so every path below the engine's state
directory is opened one component at a time with O_NOFOLLOW from the state directory down: a link the job
put anywhere on the way (its log, its run folder, the desktop folder) makes the engine read or write
nothing, instead of reading /etc/shadow or replacing /etc/passwd as root.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
from pathlib import Path
from typing import BinaryIO

from orchestrator.model.errors import BackendError
from orchestrator.model.identity import Account

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def checks_owner(account: Account | None) -> bool:
    """Whether a job's processes and files belong to another account than the engine's (a root engine)."""
    return account is not None and os.geteuid() == 0 and account.uid != 0


def uid_of(pid: int | str) -> int | None:
    """The real uid of a live process (/proc/<pid>/status), None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def tagged_processes(tag: str, uid: int | None = None) -> list[int]:
    """Live processes whose environment holds E2E_RUN_TAG=tag (read from /proc/<pid>/environ); with uid, only
    that account's: another user's process may carry any tag it likes."""
    needle = f"E2E_RUN_TAG={tag}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        if needle not in env or (uid is not None and uid_of(entry.name) != uid):
            continue
        if not _is_zombie(entry.name):
            found.append(int(entry.name))
    return found


def _is_zombie(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return True
    return data[data.rfind(b")") + 2:][:1] == b"Z"


def traverse_only(folder: Path) -> None:
    """An engine folder accounts may pass through but not list (0711)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_IMODE(os.stat(folder, follow_symlinks=False).st_mode) != 0o711:
            os.chmod(folder, 0o711, follow_symlinks=False)


def _inside(state: Path, path: Path) -> tuple[str, ...] | None:
    """path's components below the state directory, None when it lies elsewhere."""
    try:
        rel = Path(path).relative_to(state)
    except ValueError:
        return None
    if ".." in rel.parts:
        raise BackendError(f"refusing a path with '..' below the state directory: {path}")
    return rel.parts


def open_dir(state: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of state/parts..., opened one level at a time without following any symlink (ELOOP or
    ENOTDIR when the job put one on the way)."""
    fd = os.open(state, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_confined(state: Path, path: Path, offset: int = 0, limit: int | None = None) -> bytes | None:
    """A file's bytes; None when it is missing, or (below the state directory) is a symlink, lies behind one,
    or is no regular file (a FIFO the job made would block the reader forever)."""
    parts = _inside(state, path)
    try:
        if parts is None or not parts:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        else:
            dfd = open_dir(state, parts[:-1])
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
            finally:
                os.close(dfd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if parts is None:
            raise
        if exc.errno in (40, 20):  # ELOOP, ENOTDIR: a symlink on the way is refused as if nothing were there
            return None
        raise
    with os.fdopen(fd, "rb") as fh:
        if parts is not None and not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        fh.seek(offset)
        return fh.read(-1 if limit is None else limit)


def write_confined(state: Path, path: Path, data: bytes, mode: int) -> None:
    """Write through a temp file and a rename (readers never see half a file). Below the state directory the
    folder is reached without following a symlink, and the file gets the folder's owner: what the engine
    writes into a job's tree later (stop files, the desktop password) stays readable by the job's account."""
    write_confined_from(state, path, io.BytesIO(data), mode)


def write_confined_from(state: Path, path: Path, source: BinaryIO, mode: int) -> int:
    """write_confined with the content read from a file object in chunks (an upload); the bytes written."""
    parts = _inside(state, path)
    if parts is None or not parts:
        dfd = os.open(Path(path).parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        name = Path(path).name
    else:
        dfd = open_dir(state, parts[:-1])
        name = parts[-1]
    tmp = f".{name}.e2e-tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dfd)  # a symlink planted at the temp name goes, unfollowed
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dfd)
        written = 0
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fd, mode)  # whatever the umask
                folder = os.fstat(dfd)
                if os.geteuid() == 0 and folder.st_uid != 0:
                    os.fchown(fd, folder.st_uid, folder.st_gid)
                while block := source.read(1 << 20):
                    fh.write(block)
                    written += len(block)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        return written
    finally:
        os.close(dfd)


def hand_over_tree(path: Path, account: Account | None, state: Path | None = None) -> None:
    """Give a tree the engine wrote to the account (owner uid and gid). The walk holds descriptors and never
    follows a symlink, so a link the job placed in its tree cannot make root chown a file outside it; links
    themselves change owner (lchown). With state, the top is reached from there without following links.
    A missing top, or a top that is a link or a plain file, is nothing to give (a tree not staged here yet)."""
    if not checks_owner(account):
        return
    uid, gid = account.uid, account.gid  # type: ignore[union-attr]
    parts = _inside(state, path) if state is not None else None
    try:
        top = open_dir(state, parts) if state is not None and parts is not None else \
            os.open(path, _DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the top itself is a link: never followed
            return
        raise
    try:
        os.fchown(top, uid, gid)
        for _root, dirs, files, dir_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            for name in (*dirs, *files):
                with contextlib.suppress(FileNotFoundError):
                    os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    finally:
        os.close(top)


def make_dirs_confined(state: Path, path: Path, mode: int) -> None:
    """mkdir -p, then the mode; below the state directory each level is created and entered without following
    a symlink (a job that swapped its desktop folder for a link to /etc gets an error, not a chmod of /etc)."""
    parts = _inside(state, path)
    if parts is None or not parts:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        return
    fd = os.open(state, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o700, dir_fd=fd)
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        os.fchmod(fd, mode)
    except OSError as exc:
        raise BackendError(f"could not create {path}: {exc.strerror} (a symlink on the way?)") from None
    finally:
        os.close(fd)


def check_reachable(account: Account | None, folder: Path) -> None:
    """Every folder above `folder` lets the account pass (o+x, or its own, or its group's): otherwise its
    processes could not even enter their job folder, and the job would wait for a wrapper that never runs."""
    if not checks_owner(account):
        return
    groups = {account.gid, *account.groups}  # type: ignore[union-attr]
    for above in Path(folder).parents:
        st = os.stat(above)
        if st.st_mode & stat.S_IXOTH or (st.st_uid == account.uid and st.st_mode & stat.S_IXUSR) or \
                (st.st_gid in groups and st.st_mode & stat.S_IXGRP):  # type: ignore[union-attr]
            continue
        raise BackendError(f"OS account {account.name} cannot pass through {above} (mode "  # type: ignore[union-attr]
                           f"{stat.S_IMODE(st.st_mode):o}): the folders above E2E_HOME must let job accounts "
                           "pass (chmod o+x)")
