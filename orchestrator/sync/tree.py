"""One side of a sync pair (a folder tree): scanning with excludes, and the file operations the engine needs.

`Side` is the transport interface. `LocalSide` is the filesystem implementation used when both folders
are reachable from the sync process (the local backend, shared storage). `RemoteSide` (remote.py) is the
run directory on an ssh node with its own disk, through the backend's commands and rsync over ssh.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import secrets
import stat as stat_mode
from abc import ABC, abstractmethod
from pathlib import Path
from typing import NamedTuple

from orchestrator.model.errors import UserError
from orchestrator.sync.confine import check_rel, confined

# Never synced: the engine's bookkeeping (and wrapper.sh, which may export licence settings) at the top of
# a run directory, and anywhere: our own temp files, editor/lock files, core dumps and scratch files.
ROOT_EXCLUDES = frozenset({".e2e", "wrapper.sh"})
NAME_EXCLUDES = (".*.e2e-sync.*", ".*.e2e-tmp", "core", "core.[0-9]*", "*.lock", "*.lck", ".~lock.*#",
                 ".#*", "*.swp", "*.swx", "*~", ".nfs*", "*.tmp", "*.scratch")
_NAME_RE = re.compile("|".join(fnmatch.translate(p) for p in NAME_EXCLUDES), re.DOTALL)
TEMP_MARK = ".e2e-sync."


def excluded(rel_parent: str, name: str) -> bool:
    """Whether a directory entry named `name` inside `rel_parent` ("" for the root) is left out."""
    return (not rel_parent and name in ROOT_EXCLUDES) or scratch_name(name)


def _under_excluded(rel_dir: str) -> bool:
    """Whether a folder lies in an excluded one (e.g. .e2e/attempt-1): its changes are never synced."""
    parent = ""
    for part in rel_dir.split("/"):
        if excluded(parent, part):
            return True
        parent = f"{parent}/{part}" if parent else part
    return False


def scratch_name(name: str) -> bool:
    """Temp, lock, editor, core-dump and scratch file names (never synced, never kept as results)."""
    return _NAME_RE.fullmatch(name) is not None


class Entry(NamedTuple):
    """What one path is on one side: a file, a directory or a symlink (whose target is kept). The tuple is
    also what the state remembers to notice a change: a folder is always ("d", 0, 0, "") since its mtime
    changes with its content."""

    kind: str          # "f", "d" or "l"
    size: int = 0
    mtime_ns: int = 0
    target: str = ""


DIR = Entry("d")


class Side(ABC):
    """A folder tree the sync engine reads and writes by relative paths only (each confined to the root)."""

    root: Path

    @abstractmethod
    def scan(self) -> dict[str, Entry]:
        """Every synced path under the root (excludes applied, symlinks not followed)."""

    @abstractmethod
    def stat(self, rel: str) -> Entry | None:
        """The entry at rel now, or None."""

    @abstractmethod
    def sha256(self, rel: str) -> str:
        """Hex sha256 of a file's content."""

    @abstractmethod
    def mkdir(self, rel: str) -> None: ...

    @abstractmethod
    def remove(self, rel: str) -> None:
        """Remove a file or symlink (a missing one is fine)."""

    @abstractmethod
    def rmdir(self, rel: str) -> bool:
        """Remove an empty directory; False when it is not empty."""

    @abstractmethod
    def rename(self, rel: str, new_rel: str) -> None: ...

    @abstractmethod
    def symlink(self, rel: str, target: str) -> Entry: ...


class LocalSide(Side):
    """A tree on this machine's filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._root = str(self.root)
        # Folders known to be real folders (not symlinks) inside the root: from the last scan, plus those we
        # created since. Paths under them skip the per-component symlink check (thousands of files per pass).
        self._dirs: set[str] = set()

    def path(self, rel: str) -> Path:
        return Path(self.fspath(rel))

    def fspath(self, rel: str) -> str:
        """root/rel as a string, refusing any path that could lead outside the root."""
        check_rel(rel)
        parent = rel.rpartition("/")[0]
        if parent and parent not in self._dirs:
            confined(self.root, rel)
        return f"{self._root}/{rel}"

    def ensure_parent(self, rel: str) -> None:
        """Create rel's folder (and those above it) if needed, refusing symlinked folders on the way."""
        parent = rel.rpartition("/")[0]
        if not parent or parent in self._dirs:
            return
        confined(self.root, rel)
        os.makedirs(f"{self._root}/{parent}", exist_ok=True)
        confined(self.root, rel)  # nothing swapped a folder for a symlink meanwhile
        while parent:
            self._dirs.add(parent)
            parent = parent.rpartition("/")[0]

    def scan(self) -> dict[str, Entry]:
        found = self._walk("", lambda rel: True)
        self._dirs = {rel for rel, entry in found.items() if entry.kind == "d"}
        return found

    def scan_dirs(self, dirs: set[str], known_dirs: set[str]) -> dict[str, Entry]:
        """The entries directly inside each folder of `dirs` ("" is the root), and everything inside the
        folders found there that are not in `known_dirs` (new folders: inotify may have missed their files)."""
        found: dict[str, Entry] = {}
        for rel_dir in dirs:
            if rel_dir and (_under_excluded(rel_dir) or not self._real_dir(rel_dir)):
                self._dirs.discard(rel_dir)
                continue
            found.update(self._walk(rel_dir, lambda rel: rel not in known_dirs))
        self._dirs.update(rel for rel, entry in found.items() if entry.kind == "d")
        return found

    def _real_dir(self, rel_dir: str) -> bool:
        """rel_dir exists and neither it nor a folder above it is a symlink."""
        try:
            confined(self.root, f"{rel_dir}/-")
            return stat_mode.S_ISDIR(os.lstat(f"{self._root}/{rel_dir}").st_mode)
        except (OSError, UserError):
            return False

    def _walk(self, start: str, descend) -> dict[str, Entry]:
        """Entries under the folder `start`, descending into the sub-folders for which descend(rel) holds."""
        found: dict[str, Entry] = {}
        stack = [(start, f"{self._root}/{start}" if start else self._root)]
        while stack:
            rel_dir, abs_dir = stack.pop()
            try:
                entries = os.scandir(abs_dir)
            except (FileNotFoundError, NotADirectoryError):
                continue
            with entries:
                for de in entries:
                    if excluded(rel_dir, de.name):
                        continue
                    rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
                    try:
                        if de.is_file(follow_symlinks=False):  # the common case first (d_type: no syscall)
                            st = de.stat(follow_symlinks=False)
                            found[rel] = Entry("f", st.st_size, st.st_mtime_ns)
                        elif de.is_dir(follow_symlinks=False):
                            found[rel] = DIR
                            if descend(rel):
                                stack.append((rel, de.path))
                        elif de.is_symlink():
                            found[rel] = Entry("l", 0, de.stat(follow_symlinks=False).st_mtime_ns,
                                               os.readlink(de.path))
                    except FileNotFoundError:
                        continue  # deleted while we looked: the next pass sees it gone
        return found

    def stat(self, rel: str) -> Entry | None:
        try:
            st = os.lstat(self.path(rel))
        except FileNotFoundError:
            return None
        if stat_mode.S_ISLNK(st.st_mode):
            return Entry("l", 0, st.st_mtime_ns, os.readlink(self.path(rel)))
        if stat_mode.S_ISDIR(st.st_mode):
            return DIR
        return Entry("f", st.st_size, st.st_mtime_ns)

    def sha256(self, rel: str) -> str:
        return file_sha256(self.path(rel))

    def mkdir(self, rel: str) -> None:
        self.ensure_parent(rel)
        os.makedirs(self.fspath(rel), exist_ok=True)
        self._dirs.add(rel)

    def remove(self, rel: str) -> None:
        try:
            os.unlink(self.path(rel))
        except FileNotFoundError:
            pass

    def rmdir(self, rel: str) -> bool:
        self._dirs.discard(rel)
        try:
            os.rmdir(self.path(rel))
            return True
        except FileNotFoundError:
            return True
        except OSError:
            return False

    def rename(self, rel: str, new_rel: str) -> None:
        os.rename(self.path(rel), self.path(new_rel))
        self._dirs = {d for d in self._dirs if d != rel and not d.startswith(rel + "/")}

    def symlink(self, rel: str, target: str) -> Entry:
        self.ensure_parent(rel)
        dest = self.path(rel)
        tmp = dest.with_name(temp_name(dest.name))
        os.symlink(target, tmp)
        os.replace(tmp, dest)
        return self.stat(rel)


def temp_name(name: str) -> str:
    """A hidden temp name beside the final one (excluded from scans), unique per writer."""
    return f".{name[:200]}{TEMP_MARK}{secrets.token_hex(4)}"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
