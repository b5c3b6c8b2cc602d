"""Bounded, confined extraction of an uploaded tar archive: caps on entries and on unpacked bytes (declared by
the headers and actually written), tarfile's 'data' filter for paths and links, private modes; a refused
archive leaves nothing behind.

Why not `extractall`: it trusts the headers' sizes, writes everything before anyone can count it, and keeps
the archive's modes. Here each entry is checked before its bytes are read, and the decompressed stream is
metered too, so neither a gzip bomb nor an oversized header (tarfile reads pax headers into memory whole)
can make the API process read or write much past the cap.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

from orchestrator.model.errors import InfrastructureError, UserError

MAX_MEMBERS = 100_000
CHUNK = 1 << 20
# Decompressed bytes allowed beyond the files' own: a header (512) plus its padding (< 512) plus a pax or
# long-name header for each entry, and a fixed slack for tarfile's read-ahead and the end-of-archive blocks.
PER_ENTRY = 4096
SLACK = 16 << 20


class TooLarge(UserError):
    """An upload that would unpack past its cap (the API answers 413)."""


@dataclass
class Unpacked:
    """What an extraction wrote: regular files, their bytes, and the archive's top-level names."""

    files: int = 0
    bytes: int = 0
    names: list[str] = field(default_factory=list)


class _Metered:
    """A read-only stream that refuses to hand out more than `limit` bytes in total (the caller raises the
    limit as entries are accepted)."""

    def __init__(self, raw: io.BufferedIOBase, limit: int, over: Callable[[int], str]) -> None:
        self.raw, self.limit, self.over, self.seen = raw, limit, over, 0

    def read(self, size: int = -1) -> bytes:
        if size < 0 or self.seen + size > self.limit:
            size = max(0, self.limit - self.seen) + 1  # one byte past the limit tells "more" from "exactly"
        data = self.raw.read(size)
        self.seen += len(data)
        if self.seen > self.limit:
            raise TooLarge(self.over(self.seen))
        return data

    def close(self) -> None:
        self.raw.close()


def _decompressed(archive: Path) -> io.BufferedIOBase:
    """The archive's tar stream, whichever compression (gzip, bzip2, xz or none) its first bytes say."""
    with open(archive, "rb") as fh:
        magic = fh.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(archive, "rb")
    if magic.startswith(b"BZh"):
        return bz2.open(archive, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(archive, "rb")
    return open(archive, "rb")


def unpack(archive: Path, dest: Path, max_bytes: int, too_large: Callable[[int], str],
           max_members: int = MAX_MEMBERS) -> Unpacked:
    """Extract `archive` into the new folder `dest` (0700, files 0600 or 0700 when executable), writing at
    most `max_bytes` of file content. Over the cap: TooLarge(too_large(bytes seen)); a path or link out, a
    device, too many entries: UserError; a broken archive: UserError. In every refusal `dest` is removed."""
    dest.mkdir(mode=0o700)
    dest.chmod(0o700)
    try:
        stream = _Metered(_decompressed(archive), SLACK, too_large)
        try:
            with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK) as tar:  # type: ignore[call-overload]
                return _extract(tar, stream, dest, max_bytes, too_large, max_members)
        finally:
            stream.close()
    except BaseException as exc:
        shutil.rmtree(dest, ignore_errors=True)
        if isinstance(exc, tarfile.FilterError):
            raise UserError(f"refused upload: {exc}") from None
        if isinstance(exc, _WriteError):
            raise InfrastructureError(f"could not write the upload: {exc}") from None
        if isinstance(exc, (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError)):
            raise UserError(f"not a readable tar.gz archive: {exc}") from None
        raise


class _WriteError(OSError):
    """Writing the extracted files failed (a full disk): the operator's problem, not a bad archive."""


def _extract(tar: tarfile.TarFile, stream: _Metered, dest: Path, max_bytes: int,
             too_large: Callable[[int], str], max_members: int) -> Unpacked:
    done = Unpacked()
    declared = entries = 0
    for member in tar:
        entries += 1
        if entries > max_members:
            raise UserError(f"the upload has more than {max_members} entries; at most {max_members}")
        safe = tarfile.data_filter(member, str(dest))  # FilterError: absolute, '..', links out, devices
        parts = Path(safe.name).parts
        top = parts[0] if parts else ""
        if top and top not in done.names and len(done.names) < 20:
            done.names.append(top)
        target = dest / safe.name
        if safe.isreg():
            declared += safe.size
            if declared > max_bytes:  # refused on the header's word, before a byte of it is read
                raise TooLarge(too_large(declared))
            stream.limit = SLACK + declared + PER_ENTRY * entries
            source = tar.extractfile(member)
            assert source is not None  # a regular file always has a data stream
            _private_dirs(dest, target.parent)
            done.bytes = _write_file(source, target, safe, done.bytes, max_bytes, too_large)
            done.files += 1
        elif safe.isdir():
            _private_dirs(dest, target)
            target.chmod(0o700)
        elif safe.issym():
            _private_dirs(dest, target.parent)
            _clear(target)
            os.symlink(safe.linkname, target)
        elif safe.islnk():
            # Materialising copies a hard link as a file of its own, so its bytes count again.
            source_path = dest / safe.linkname
            size = os.lstat(source_path).st_size
            declared += size
            done.bytes += size
            if max(declared, done.bytes) > max_bytes:
                raise TooLarge(too_large(max(declared, done.bytes)))
            _private_dirs(dest, target.parent)
            _clear(target)
            os.link(source_path, target, follow_symlinks=False)
        stream.limit = SLACK + declared + PER_ENTRY * entries
    return done


def _write_file(source: IO[bytes], target: Path, info: tarfile.TarInfo, written: int, max_bytes: int,
                too_large: Callable[[int], str]) -> int:
    """Copy one entry's bytes, counting them against the cap as they arrive (a sparse entry, or a header
    that lied, cannot write more than the cap allows)."""
    _clear(target)
    mode = 0o700 if (info.mode or 0) & 0o100 else 0o600
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except OSError as exc:
        raise _WriteError(str(exc)) from exc
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > max_bytes:
                raise TooLarge(too_large(written))
            try:
                out.write(chunk)
            except OSError as exc:
                raise _WriteError(str(exc)) from exc
    if info.mtime:
        os.utime(target, (info.mtime, info.mtime))
    return written


def _private_dirs(dest: Path, folder: Path) -> None:
    """Create `folder` and every missing folder between `dest` and it, each 0700 (mkdir's `parents` would
    make the intermediate ones with the umask's modes)."""
    current = dest
    for part in folder.relative_to(dest).parts:
        current = current / part
        if not current.is_dir():
            current.mkdir(mode=0o700)
            current.chmod(0o700)


def _clear(target: Path) -> None:
    """A later entry of the same name replaces the earlier one (as tar does), never writes through it."""
    if target.is_symlink() or target.is_file():
        target.unlink()
