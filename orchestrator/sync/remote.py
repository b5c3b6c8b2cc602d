"""The run directory on an ssh node without shared storage, as a sync `Side`, and the copier that reaches it.

A scan is one `find -printf` over ssh (NUL-separated fields, so any file name survives); every other operation
is one argv-quoted command through the backend. Content moves with rsync over the backend's ssh command (same
key, managed known_hosts, a multiplexed master so each file costs no new handshake), or with SFTP through the
backend's file calls where rsync is missing on either end.
"""

from __future__ import annotations

import os
import shutil
import stat as stat_mode
from pathlib import Path

from orchestrator.cluster.base import ClusterBackend, Node
from orchestrator.model.errors import BackendError, UserError
from orchestrator.sync.confine import check_rel
from orchestrator.sync.copy import Copied, RsyncCopier
from orchestrator.sync.tree import DIR, Entry, LocalSide, Side, excluded, temp_name

# type, size, mtime (seconds.fraction), link target, path relative to the start point: NUL after each.
FIND_FORMAT = r"%y\0%s\0%T@\0%l\0%P\0"
_CHECK_PARENTS = 'for p; do if [ -L "$p" ]; then echo "$p"; exit 3; fi; done'
_RMDIR = '[ -e "$1" ] || [ -L "$1" ] || exit 0; exec rmdir -- "$1"'
_SYMLINK = 'ln -s -- "$1" "$2" && exec mv -fT -- "$2" "$3"'


def _ns(stamp: str) -> int:
    """find's %T@ (e.g. 1700000000.1234567890) as integer nanoseconds, without float rounding."""
    sec, _, frac = stamp.partition(".")
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


def parse_find(data: bytes) -> dict[str, Entry]:
    """The entries of a FIND_FORMAT listing, excludes applied (names are bytes decoded as the OS would)."""
    fields = data.split(b"\0")
    found: dict[str, Entry] = {}
    for i in range(0, len(fields) - 4, 5):
        kind, size, mtime, target, rel = fields[i:i + 5]
        rel_s = os.fsdecode(rel)
        parts = rel_s.split("/")
        if not rel_s or any(excluded("/".join(parts[:n]), part) for n, part in enumerate(parts)):
            continue
        if kind == b"f":
            found[rel_s] = Entry("f", int(size), _ns(mtime.decode()))
        elif kind == b"d":
            found[rel_s] = DIR
        elif kind == b"l":
            found[rel_s] = Entry("l", 0, _ns(mtime.decode()), os.fsdecode(target))
    return found


class RemoteSide(Side):
    """A folder tree on a node, read and written through the backend's commands (nothing runs there but
    coreutils, findutils and, when present, rsync)."""

    def __init__(self, backend: ClusterBackend, node: Node, root: Path) -> None:
        self.backend, self.node, self.root = backend, node, Path(root)
        self._root = str(self.root)
        self._dirs: set[str] = set()   # real folders seen by the last scan (or made since): no symlink check

    def _run(self, argv: list, check: bool = True):
        return self.backend.run(self.node, argv, check=check)

    def fspath(self, rel: str) -> str:
        """root/rel on the node, refusing any path that could lead outside the root."""
        check_rel(rel)
        parent = rel.rpartition("/")[0]
        if parent and parent not in self._dirs:
            self._check_parents(rel)
        return f"{self._root}/{rel}"

    def _check_parents(self, rel: str) -> None:
        parts = rel.split("/")[:-1]
        paths = [f"{self._root}/{'/'.join(parts[:n])}" for n in range(1, len(parts) + 1)]
        done = self._run(["sh", "-c", _CHECK_PARENTS, "sh", *paths], check=False)
        if done.returncode == 3:
            raise UserError(f"path {rel!r} goes through a symlink on node {self.node.name}")

    def ensure_parent(self, rel: str) -> None:
        parent = rel.rpartition("/")[0]
        if not parent or parent in self._dirs:
            return
        self._check_parents(rel)
        self._run(["mkdir", "-p", "--", f"{self._root}/{parent}"])
        self._check_parents(rel)  # nothing swapped a folder for a symlink meanwhile
        while parent:
            self._dirs.add(parent)
            parent = parent.rpartition("/")[0]

    def scan(self) -> dict[str, Entry]:
        # A missing root is an error, never an empty tree (that would read as "everything was deleted").
        done = self._run(["find", self._root, "-mindepth", "1", "(", "-path", f"{self._root}/.e2e", "-prune",
                          ")", "-o", "-printf", FIND_FORMAT], check=False)
        if done.returncode != 0 and not done.stdout:
            raise BackendError(f"cannot list {self._root} on node {self.node.name}: "
                               f"{done.stderr.decode(errors='replace').strip()[-300:]}")
        found = parse_find(done.stdout)  # exit 1 with output: a file vanished while listed; the rest holds
        self._dirs = {rel for rel, entry in found.items() if entry.kind == "d"}
        return found

    def stat(self, rel: str) -> Entry | None:
        done = self._run(["find", self.fspath(rel), "-maxdepth", "0", "-printf",
                          FIND_FORMAT.replace("%P", "x")], check=False)
        if not done.stdout:
            return None
        return parse_find(done.stdout).get("x")

    def sha256(self, rel: str) -> str:
        done = self._run(["sh", "-c", 'exec sha256sum < "$1"', "sh", self.fspath(rel)])
        return done.stdout.split()[0].decode()

    def mkdir(self, rel: str) -> None:
        self.ensure_parent(rel)
        self._run(["mkdir", "-p", "--", self.fspath(rel)])
        self._dirs.add(rel)

    def remove(self, rel: str) -> None:
        self._run(["rm", "-f", "--", self.fspath(rel)])

    def rmdir(self, rel: str) -> bool:
        self._dirs.discard(rel)
        return self._run(["sh", "-c", _RMDIR, "sh", self.fspath(rel)], check=False).returncode == 0

    def rename(self, rel: str, new_rel: str) -> None:
        self._run(["mv", "-fT", "--", self.fspath(rel), self.fspath(new_rel)])
        self._dirs = {d for d in self._dirs if d != rel and not d.startswith(rel + "/")}

    def symlink(self, rel: str, target: str) -> Entry:
        self.ensure_parent(rel)
        dest = self.fspath(rel)
        tmp = f"{dest.rpartition('/')[0]}/{temp_name(rel.rpartition('/')[2])}"
        self._run(["sh", "-c", _SYMLINK, "sh", target, tmp, dest])
        return self.stat(rel)


class RemoteCopier:
    """Copies between a RemoteSide and a LocalSide, in either direction: rsync over ssh (deltas, appends as
    appends) when both ends have rsync, else whole files over SFTP (atomic on both ends)."""

    def __init__(self, remote_shell: list[str] | None, host: str, use_rsync: bool) -> None:
        self.use_rsync = use_rsync and remote_shell is not None and shutil.which("rsync") is not None
        self._rsync = {way: RsyncCopier(remote_shell=remote_shell, host=host, remote=way) for way in ("src", "dst")}

    def copy(self, src: Side, dst: Side, rel: str, src_entry: Entry, dst_entry: Entry | None,
             dst_is_ours: bool, force: bool = False) -> Copied | None:
        if self.use_rsync:
            way = "src" if isinstance(src, RemoteSide) else "dst"
            return self._rsync[way].copy(src, dst, rel, src_entry, dst_entry, dst_is_ours, force)
        if dst_entry is not None and dst_entry.kind == "d":
            raise IsADirectoryError(f"{rel!r} is a directory on the other side")
        if isinstance(src, RemoteSide):
            return _sftp_get(src, dst, rel, src_entry, force)
        return _sftp_put(src, dst, rel, src_entry, force)


def _sftp_get(src: RemoteSide, dst: LocalSide, rel: str, src_entry: Entry, force: bool) -> Copied | None:
    data = src.backend.read_bytes(src.node, Path(src.fspath(rel)))
    now = src.stat(rel)
    if data is None or now is None or (not force and (now.size, now.mtime_ns) != (src_entry.size, src_entry.mtime_ns)):
        return None  # still being written (or gone): look again later
    dst.ensure_parent(rel)
    path = dst.fspath(rel)
    tmp = f"{path.rpartition('/')[0]}/{temp_name(rel.rpartition('/')[2])}"
    with open(tmp, "xb") as fh:
        fh.write(data)
    os.utime(tmp, ns=(now.mtime_ns, now.mtime_ns))
    os.replace(tmp, path)
    return Copied(len(data), now, dst.stat(rel))


def _sftp_put(src: LocalSide, dst: RemoteSide, rel: str, src_entry: Entry, force: bool) -> Copied | None:
    with open(src.fspath(rel), "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat_mode.S_ISREG(st.st_mode):
            raise IsADirectoryError(f"{rel!r} is no longer a regular file")
        data = fh.read()
    if not force and (st.st_size, st.st_mtime_ns) != (src_entry.size, src_entry.mtime_ns):
        return None
    dst.ensure_parent(rel)
    dst.backend.write_bytes(dst.node, Path(dst.fspath(rel)), data)  # temp + rename on the node
    return Copied(len(data), Entry("f", st.st_size, st.st_mtime_ns), dst.stat(rel))
