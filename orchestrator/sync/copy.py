"""Moves one file's content between two sides: atomic (temp + rename), verified, appends sent as appends.

Locally the kernel copies (copy_file_range), which beat rsync on this machine for whole files, many small
files and no-op passes (reference/platform.md, section 4). A grown file whose old content is unchanged
(solver logs, appended time series) gets only its new bytes, written in place after the old end: a reader
sees the old content and then more, never a torn file.
"""

from __future__ import annotations

import os
import re
import shlex
import stat as stat_mode
import subprocess
from dataclasses import dataclass

from orchestrator.sync.tree import Entry, LocalSide, temp_name

APPEND_MIN = 1 << 20        # smaller files are simply rewritten (cheaper than checking)
PROBE = 1 << 16             # bytes compared before the old end to recognise an append
SAMPLES = 16                # evenly spaced 4 KiB blocks compared too (catches a rewrite with the same tail)
SMALL = 1 << 16
# Never follow a symlink planted where a file was scanned; never open a FIFO or device by accident.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Copied:
    """A finished copy: bytes written, and both sides' entries as they now are (for the state)."""

    sent: int
    src: Entry
    dst: Entry
    appended: bool = False
    superseded: bool = False  # the other side's file changed meanwhile (a user's edit): left as it is, and
                              # `dst` is what the copy would have written, so the next pass sends the edit back


class LocalCopier:
    """Copies between two LocalSides."""

    def copy(self, src: LocalSide, dst: LocalSide, rel: str, src_entry: Entry, dst_entry: Entry | None,
             dst_is_ours: bool, force: bool = False) -> Copied | None:
        """Copy rel from src to dst. None when the source changed since it was scanned or during the copy
        (it is still being written): nothing on dst changed then. `dst_is_ours`: dst still holds what the
        last pass wrote, so an append may be written in place. `force` accepts a snapshot of a file
        that never stops changing."""
        s_path = src.fspath(rel)
        dst.ensure_parent(rel)
        d_path = dst.fspath(rel)
        fin = os.open(s_path, READ_FLAGS)
        try:
            before = os.fstat(fin)
            if not stat_mode.S_ISREG(before.st_mode):
                raise IsADirectoryError(f"{rel!r} is no longer a regular file")
            if (before.st_size, before.st_mtime_ns) != (src_entry.size, src_entry.mtime_ns) and not force:
                return None
            size = before.st_size
            old = dst_entry.size if dst_entry is not None and dst_entry.kind == "f" else -1
            if dst_is_ours and APPEND_MIN <= old < size and _is_append(fin, d_path, old):
                fout = os.open(d_path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    sent = _copy_range(fin, fout, old, size - old)
                    os.utime(fout, ns=(before.st_atime_ns, before.st_mtime_ns))
                    after = os.fstat(fout)
                finally:
                    os.close(fout)
                # An append is written in place, so it is kept even if the source moved on meanwhile:
                # dst now equals the source's first `size` bytes, which is what we record.
                return Copied(sent, Entry("f", size, before.st_mtime_ns),
                              Entry("f", after.st_size, after.st_mtime_ns), appended=True)
            if dst_entry is not None and dst_entry.kind == "d":
                raise IsADirectoryError(f"{rel!r} is a directory on the other side")
            tmp = d_path[: len(d_path) - len(rel.rpartition("/")[2])] + temp_name(rel.rpartition("/")[2])
            fout = os.open(tmp, TEMP_FLAGS, 0o600)
            try:
                sent = _copy_range(fin, fout, 0, size)
                moved = os.fstat(fin)
                if (moved.st_size, moved.st_mtime_ns) != (before.st_size, before.st_mtime_ns) and not force:
                    os.close(fout)
                    fout = -1
                    os.unlink(tmp)
                    return None
                os.fchmod(fout, stat_mode.S_IMODE(before.st_mode))
                os.utime(fout, ns=(before.st_atime_ns, before.st_mtime_ns))
                after = os.fstat(fout)
                os.close(fout)
                fout = -1
                if not _put_in_place(tmp, d_path, dst_entry):
                    os.unlink(tmp)
                    return Copied(0, Entry("f", size, before.st_mtime_ns), Entry("f", after.st_size,
                                                                                 after.st_mtime_ns), superseded=True)
            except BaseException:
                if fout >= 0:
                    os.close(fout)
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise
        finally:
            os.close(fin)
        return Copied(sent, Entry("f", size, before.st_mtime_ns), Entry("f", after.st_size, after.st_mtime_ns))


def _put_in_place(tmp: str, d_path: str, dst_entry: Entry | None) -> bool:
    """Move the finished temp file over the destination, unless the destination changed since the pass
    scanned it (someone wrote it meanwhile: their write wins, nothing is replaced). Where there was nothing,
    a hard link creates the name only if it is still free (atomic); an existing file is compared just before
    the rename (a window of microseconds instead of the whole copy)."""
    if dst_entry is None:
        try:
            os.link(tmp, d_path)
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: look, then rename
            if os.path.lexists(d_path):
                return False
            os.replace(tmp, d_path)
            return True
        os.unlink(tmp)
        return True
    try:
        now = os.lstat(d_path)
    except FileNotFoundError:
        return False
    if not stat_mode.S_ISREG(now.st_mode) or (now.st_size, now.st_mtime_ns) != (dst_entry.size, dst_entry.mtime_ns):
        return False
    os.replace(tmp, d_path)
    return True


def _is_append(fin: int, d_path: str, old: int) -> bool:
    """Whether the destination's content is the source's first `old` bytes (sampled, not read whole)."""
    try:
        fold = os.open(d_path, READ_FLAGS)
    except OSError:
        return False
    try:
        if os.fstat(fold).st_size != old:
            return False
        tail = max(0, old - PROBE)
        spots = {0: min(4096, old), tail: old - tail}
        spots.update({old * i // SAMPLES: 4096 for i in range(1, SAMPLES) if old * i // SAMPLES + 4096 <= tail})
        return all(os.pread(fin, n, off) == os.pread(fold, n, off) for off, n in spots.items())
    finally:
        os.close(fold)


def _copy_range(fin: int, fout: int, offset: int, length: int) -> int:
    """Copy length bytes from fin@offset to fout@offset, in the kernel where it can; bytes copied."""
    if length <= SMALL:
        data = os.pread(fin, length, offset)
        os.pwrite(fout, data, offset)
        return len(data)
    done = 0
    try:
        while done < length:
            n = os.copy_file_range(fin, fout, length - done, offset + done, offset + done)
            if n == 0:
                break  # the source shrank under us
            done += n
        return done
    except OSError:
        pass  # e.g. EXDEV on older kernels or unsupported filesystems: plain reads and writes
    while done < length:
        block = os.pread(fin, min(1 << 20, length - done), offset + done)
        if not block:
            break
        os.pwrite(fout, block, offset + done)
        done += len(block)
    return done


class RsyncCopier:
    """Delegates a file to rsync: the transfer for a run directory on another node (rsync over ssh sends only
    changed blocks of a modified file, and `--append-verify` only the new bytes of a grown one), and usable
    locally for the same behaviour. The destination is still replaced atomically (rsync's temp + rename),
    except for verified appends. `remote_shell`/`host` come from the backend (e.g. ["ssh", "-F", cfg]);
    None means both sides are local."""

    def __init__(self, rsync: str = "rsync", remote_shell: list[str] | None = None, host: str | None = None,
                 remote: str = "dst") -> None:
        self.rsync, self.remote_shell, self.host, self.remote = rsync, remote_shell, host, remote

    def argv(self, src_path: str, dst_path: str, append: bool) -> list[str]:
        argv = [self.rsync, "--times", "--perms", "--stats", "-s", "--no-whole-file"]
        argv += ["--append-verify"] if append else []
        if self.remote_shell:
            argv += ["-e", shlex.join(self.remote_shell)]
        if self.host:  # -s (secluded/protected args): the remote path is never split by a remote shell
            src_path = f"{self.host}:{src_path}" if self.remote == "src" else src_path
            dst_path = f"{self.host}:{dst_path}" if self.remote == "dst" else dst_path
        return [*argv, "--", src_path, dst_path]

    def copy(self, src: LocalSide, dst: LocalSide, rel: str, src_entry: Entry, dst_entry: Entry | None,
             dst_is_ours: bool, force: bool = False) -> Copied | None:
        if dst_entry is not None and dst_entry.kind == "d":
            raise IsADirectoryError(f"{rel!r} is a directory on the other side")
        dst.ensure_parent(rel)
        append = dst_is_ours and dst_entry is not None and dst_entry.kind == "f" and dst_entry.size < src_entry.size
        proc = subprocess.run(self.argv(src.fspath(rel), dst.fspath(rel), append), capture_output=True, text=True,
                              check=False)
        if proc.returncode == 24 or (proc.returncode == 23 and "vanished" in proc.stderr):
            return None  # the file changed or vanished while rsync read it: look again later
        if proc.returncode != 0:
            raise OSError(f"rsync of {rel!r} failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
        now_src, now_dst = src.stat(rel), dst.stat(rel)
        if now_dst is None:
            return None
        literal = re.search(r"Literal data: ([\d,.]+)", proc.stdout)
        sent = int(re.sub(r"[,.]", "", literal.group(1))) if literal else src_entry.size
        # dst changed, so it is recorded either way; a source that moved on during the transfer is recorded
        # as it was scanned, so the next pass sends it again (never mistaken for a conflict).
        same = now_src is not None and (now_src.size, now_src.mtime_ns) == (now_dst.size, now_dst.mtime_ns)
        return Copied(sent, now_src if same else src_entry, now_dst, appended=append)
