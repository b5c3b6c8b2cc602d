"""Keeps every synced path inside its root: relative names only, no `..`, no symlink that escapes."""

from __future__ import annotations

import contextlib
import errno
import os
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
    """root/rel for reading; refused when it or a folder on the way is a symlink (a file swapped for a link
    between a listing and the read must not hand out what it points to)."""
    path = confined(root, rel)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"path {rel!r} is a symlink: not read") from None
        raise
    return os.fdopen(fd, "rb")


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
