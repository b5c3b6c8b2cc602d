"""Keeps every synced path inside its root: relative names only, no `..`, no symlink that escapes."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from orchestrator.model.errors import UserError


def check_rel(rel: str) -> str:
    """A relative path as the sync engine names it (POSIX separators); raises UserError when it could escape."""
    if not rel or "\x00" in rel:
        raise UserError(f"path {rel!r} is empty or holds a NUL byte")
    if rel.startswith("/") or any(part in ("..", ".", "") for part in rel.split("/")):
        raise UserError(f"path {rel!r} must be relative and stay inside its folder (no '..', no absolute path)")
    return rel


def confined(root: Path, rel: str) -> Path:
    """root/rel, after checking that no directory on the way is a symlink (which could lead elsewhere).
    The last component itself may be a symlink: callers never follow it."""
    check_rel(rel)
    path = root
    parts = PurePosixPath(rel).parts
    for part in parts[:-1]:
        path = path / part
        if path.is_symlink():
            raise UserError(f"path {rel!r} goes through the symlink {part!r}")
    return path / parts[-1]


def link_stays_inside(root: Path, rel: str, target: str) -> bool:
    """Whether a symlink at root/rel pointing to target resolves inside root (relative targets only)."""
    if not target or os.path.isabs(target):
        return False
    joined = os.path.normpath(os.path.join(os.path.dirname(rel), target))
    return joined != ".." and not joined.startswith("../") and not os.path.isabs(joined)


def open_confined(root: Path, rel: str) -> BinaryIO:
    """root/rel for reading, walked one name at a time from root (openat with O_NOFOLLOW at every step, so
    what was checked is what is opened: a file or folder swapped for a symlink meanwhile is refused, never
    followed). Refused (UserError) when root itself, a folder on the way or the file is a symlink, or the
    file is not a regular file (a FIFO would hang the reader; a device is nobody's output)."""
    check_rel(rel)
    *folders, name = PurePosixPath(rel).parts
    walked = str(root)
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise _refusal(exc, rel, walked, last=False) from None
    try:
        for part in folders:
            walked = os.path.join(walked, part)
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                raise _refusal(exc, rel, walked, last=False) from None
            os.close(fd)
            fd = inner
        try:
            handle = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=fd)
        except OSError as exc:
            raise _refusal(exc, rel, os.path.join(walked, name), last=True) from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(handle).st_mode):
        os.close(handle)
        raise UserError(f"path {rel!r} is not a regular file: not read")
    return os.fdopen(handle, "rb")


def _refusal(exc: OSError, rel: str, at: str, last: bool) -> Exception:
    """The error for a failed step of open_confined: a UserError when a symlink stood in the way (O_NOFOLLOW
    answers ELOOP for a file, ENOTDIR for a folder), else the OS error as it was."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(at):
        return UserError(f"path {rel!r} {'is' if last else 'goes through'} a symlink: not read")
    return exc


def write_confined(root: Path, rel: str, data: bytes) -> Path:
    """Replace root/rel whole (temp file, then rename), creating folders as needed; never through a symlinked
    folder, and never through a symlink planted at the temp name."""
    path = confined(root, rel)
    root.mkdir(parents=True, exist_ok=True)
    folder = root
    for part in PurePosixPath(rel).parts[:-1]:
        folder = folder / part
        if not folder.is_dir():
            folder.mkdir()  # one at a time: a symlink put here meanwhile makes mkdir fail, not follow it
    tmp = path.with_name(f".{path.name}.e2e-tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # removes a planted link itself, never its target
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return path
