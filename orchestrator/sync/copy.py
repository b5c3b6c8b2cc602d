"""Moves one file's content between two sides: atomic (temp + rename), verified, appends sent as appends.

Locally the kernel copies (copy_file_range), which beat rsync on this machine for whole files, many small
files and no-op passes (reference/platform.md, section 4). A grown file whose old content is unchanged
(solver logs, appended time series) gets only its new bytes, written in place after the old end: a reader
sees the old content and then more, never a torn file.
"""

from __future__ import annotations

import os
import stat as stat_mode
from dataclasses import dataclass

from .tree import Entry, LocalSide, temp_name

APPEND_MIN = 1 << 20        # smaller files are simply rewritten (cheaper than checking)
PROBE = 1 << 16             # bytes compared before the old end to recognise an append
SAMPLES = 16                # evenly spaced 4 KiB blocks compared too (catches a rewrite with the same tail)
SMALL = 1 << 16


@dataclass(frozen=True)
class Copied:
    """A finished copy: bytes written, and both sides' entries as they now are (for the state)."""

    sent: int
    src: Entry
    dst: Entry
    appended: bool = False


class LocalCopier:
    """Copies between two LocalSides."""

    def copy(self, src: LocalSide, dst: LocalSide, rel: str, src_entry: Entry, dst_entry: Entry | None,
             dst_is_ours: bool, force: bool = False) -> Copied | None:
        """Copy rel from src to dst. None when the source changed since it was scanned or during the copy
        (it is still being written): nothing on dst changed then. `dst_is_ours`: dst still holds what the
        last pass wrote, so an append may be written in place. `force` accepts a snapshot of a file
        that never stops changing."""
        s_path, d_path = src.path(rel), dst.path(rel)
        d_path.parent.mkdir(parents=True, exist_ok=True)
        with open(s_path, "rb") as fin:
            before = os.fstat(fin.fileno())
            if (before.st_size, before.st_mtime_ns) != (src_entry.size, src_entry.mtime_ns) and not force:
                return None
            size = before.st_size
            old = dst_entry.size if dst_entry is not None and dst_entry.kind == "f" else -1
            if dst_is_ours and APPEND_MIN <= old < size and _is_append(fin, d_path, old):
                with open(d_path, "r+b") as fout:
                    sent = _copy_range(fin, fout, old, size - old)
                os.utime(d_path, ns=(before.st_atime_ns, before.st_mtime_ns))
                # An append is written in place, so it is kept even if the source moved on meanwhile:
                # dst now equals the source's first `size` bytes, which is what we record.
                return Copied(sent, Entry("f", size, before.st_mtime_ns), dst.stat(rel), appended=True)
            tmp = d_path.with_name(temp_name(d_path.name))
            try:
                with open(tmp, "wb") as fout:
                    sent = _copy_range(fin, fout, 0, size)
                after = os.fstat(fin.fileno())
                if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) and not force:
                    os.unlink(tmp)
                    return None
                os.chmod(tmp, stat_mode.S_IMODE(before.st_mode))
                os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))
                if dst_entry is not None and dst_entry.kind == "d":
                    raise IsADirectoryError(f"{rel!r} is a directory on the other side")
                os.replace(tmp, d_path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                raise
        return Copied(sent, Entry("f", size, before.st_mtime_ns), dst.stat(rel))


def _is_append(fin, d_path, old: int) -> bool:
    """Whether the destination's content is the source's first `old` bytes (sampled, not read whole)."""
    try:
        with open(d_path, "rb") as fold:
            if os.fstat(fold.fileno()).st_size != old:
                return False
            offsets = {0, max(0, old - PROBE)} | {old * i // SAMPLES for i in range(1, SAMPLES)}
            for off in sorted(offsets):
                length = min(PROBE if off == max(0, old - PROBE) else 4096, old - off)
                if os.pread(fin.fileno(), length, off) != os.pread(fold.fileno(), length, off):
                    return False
        return True
    except OSError:
        return False


def _copy_range(fin, fout, offset: int, length: int) -> int:
    """Copy length bytes from fin@offset to fout@offset, in the kernel where it can; bytes copied."""
    if length <= SMALL:
        data = os.pread(fin.fileno(), length, offset)
        os.pwrite(fout.fileno(), data, offset)
        return len(data)
    done = 0
    in_fd, out_fd = fin.fileno(), fout.fileno()
    try:
        while done < length:
            n = os.copy_file_range(in_fd, out_fd, length - done, offset + done, offset + done)
            if n == 0:
                break  # the source shrank under us
            done += n
        return done
    except OSError:
        pass  # e.g. EXDEV on older kernels or unsupported filesystems: plain reads and writes
    while done < length:
        block = os.pread(in_fd, min(1 << 20, length - done), offset + done)
        if not block:
            break
        os.pwrite(out_fd, block, offset + done)
        done += len(block)
    return done
