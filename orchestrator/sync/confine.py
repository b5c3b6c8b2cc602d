"""Keeps every synced path inside its root: relative names only, no `..`, no symlink that escapes."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ..errors import UserError


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
