"""Uploads cannot escape the user's folder: absolute paths, '..', symlinks and hard links out, devices;
they unpack within a cap on bytes (declared, decompressed and written) and entries, leaving nothing behind
when refused; and a spec submitted through the API may only name folders inside the caller's uploads."""

from __future__ import annotations

import io
import stat
import tarfile
import time
from pathlib import Path

import pytest

from orchestrator.api.uploads import check_inside_uploads, path_fields
from orchestrator.control import unpack as unpack_module
from orchestrator.control.unpack import TooLarge, unpack
from orchestrator.model.errors import SpecError, UserError
from orchestrator.model.spec import validate_spec
from tests.resilience import record


def _unpack(archive: Path, dest: Path, cap: int = 1 << 30, max_members: int = 100_000) -> int:
    return unpack(archive, dest, cap, lambda seen: f"over the cap: {seen} bytes", max_members).files


def archive(path: Path, *members: tarfile.TarInfo, data: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            if member.isfile():
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
            else:
                tar.addfile(member)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, target, mode
    return info


ESCAPES = {
    "absolute path": [member("/tmp/e2e-upload-escape")],
    "dot-dot": [member("case/../../e2e-upload-escape")],
    "symlink out": [member("case/link", tarfile.SYMTYPE, "/etc")],
    "symlink then write through it": [member("case/link", tarfile.SYMTYPE, "../.."),
                                      member("case/link/e2e-upload-escape")],
    "hard link out": [member("case/hard", tarfile.LNKTYPE, "/etc/passwd")],
    "device node": [member("case/dev", tarfile.CHRTYPE)],
    "fifo": [member("case/fifo", tarfile.FIFOTYPE)],
}


def test_no_upload_escapes_its_folder(tmp_path):
    outside = tmp_path / "e2e-upload-escape"
    escaped, refused = [], 0
    for name, members in ESCAPES.items():
        dest = tmp_path / "uploads" / name.replace(" ", "-")
        dest.parent.mkdir(exist_ok=True)
        try:
            _unpack(archive(tmp_path / f"{name}.tar.gz", *members), dest)
        except UserError as exc:
            assert "refused upload" in exc.message
            refused += 1
        written = [p for p in dest.rglob("*")] if dest.exists() else []
        if outside.exists() or any(p.is_symlink() or not p.resolve().is_relative_to(dest.resolve())
                                   for p in written):
            escaped.append(name)
    assert not escaped and not Path("/tmp/e2e-upload-escape").exists()
    record("bad input/uploads", len(ESCAPES), len(ESCAPES) - len(escaped),
           f"{len(escaped)} escapes in {len(ESCAPES)} hostile archives ({refused} refused outright)")


def test_a_plain_case_unpacks_private_to_the_engine(tmp_path):
    dest = tmp_path / "up"
    packed = archive(tmp_path / "ok.tar.gz", member("case/system/controlDict", mode=0o666),
                     member("case/Allrun", mode=0o777), member("case/link", tarfile.SYMTYPE, "system"))
    done = unpack(packed, dest, 1000, str)
    assert (done.files, done.bytes, done.names) == (2, 2, ["case"])
    assert (dest / "case/system/controlDict").read_bytes() == b"x"
    assert (dest / "case/link").is_symlink() and (dest / "case/link/controlDict").read_bytes() == b"x"
    modes = {p.relative_to(dest).as_posix(): stat.S_IMODE(p.lstat().st_mode)
             for p in [dest, *dest.rglob("*")] if not p.is_symlink()}
    # folders 0700, files 0600 (0700 when executable): a job account cannot read another user's inputs here
    assert modes == {".": 0o700, "case": 0o700, "case/system": 0o700, "case/system/controlDict": 0o600,
                     "case/Allrun": 0o700}


def test_a_bomb_is_refused_on_its_declared_size_and_leaves_nothing(tmp_path):
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz") as tar:
        small = member("case/small")
        small.size = 1
        tar.addfile(small, io.BytesIO(b"x"))
        info = tarfile.TarInfo("case/zeros")
        info.size = 64 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert bomb.stat().st_size < 100_000  # 64 MiB of zeros packs to ~64 KiB
    dest = tmp_path / "up"
    started = time.monotonic()
    with pytest.raises(TooLarge, match=f"over the cap: {(64 << 20) + 1} bytes"):
        unpack(bomb, dest, 1 << 20, lambda seen: f"over the cap: {seen} bytes")
    assert time.monotonic() - started < 1  # refused on the header: the zeros are never inflated
    assert not dest.exists()


def test_bytes_written_are_counted_whatever_the_header_said(tmp_path):
    info = tarfile.TarInfo("case/liar")
    info.size = 10  # a header that understates what its stream holds (as a sparse entry's may)
    with pytest.raises(TooLarge, match="3000"):
        unpack_module._write_file(io.BytesIO(b"x" * 3000), tmp_path / "liar", info, 0, 1000, lambda n: f"{n}")
    # hard links weigh their target's bytes: materialising a run's inputs copies each as a file of its own
    packed = archive(tmp_path / "hard.tar.gz", member("case/a"), member("case/b", tarfile.LNKTYPE, "case/a"),
                     member("case/c", tarfile.LNKTYPE, "case/a"), data=b"y" * 400)
    with pytest.raises(TooLarge):
        _unpack(packed, tmp_path / "hard", cap=1000)
    assert _unpack(packed, tmp_path / "hard-ok", cap=1200) == 1


def test_an_oversized_header_is_cut_off_while_decompressing(tmp_path, monkeypatch):
    """tarfile reads a pax header into memory whole: the decompressed stream itself is metered."""
    monkeypatch.setattr(unpack_module, "SLACK", 1 << 20)
    packed = tmp_path / "pax.tar.gz"
    with tarfile.open(packed, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("case/f")
        info.size, info.pax_headers = 1, {"comment": "z" * (8 << 20)}
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(TooLarge):
        _unpack(packed, tmp_path / "up", cap=1000)
    assert not (tmp_path / "up").exists()


def test_too_many_entries_are_refused(tmp_path):
    packed = archive(tmp_path / "many.tar.gz", *[member(f"case/f{i}") for i in range(6)])
    with pytest.raises(UserError, match="more than 5 entries"):
        _unpack(packed, tmp_path / "up", max_members=5)
    assert not (tmp_path / "up").exists()


def test_garbage_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(UserError, match="not a readable tar.gz"):
        _unpack(junk, tmp_path / "dest")


def test_specs_may_only_name_the_callers_uploads(tmp_path):
    mine = tmp_path / "uploads" / "alice"
    (mine / "up-1" / "case").mkdir(parents=True)
    (tmp_path / "uploads" / "bob" / "up-2").mkdir(parents=True)
    ok = validate_spec({"name": "j", "solver": {"name": "command", "command": ["true"],
                                                "inputs": ["up-1/case"]}}, base_dir=mine)
    check_inside_uploads(ok, mine)
    assert [f for f, _ in path_fields(ok)] == ["solver.inputs.0"]
    for sneaky in ["../bob/up-2", "/etc", "up-1/case/../../../bob/up-2"]:
        spec = validate_spec({"name": "j", "solver": {"name": "command", "command": ["true"],
                                                      "inputs": ["up-1/case", sneaky]}}, base_dir=mine)
        with pytest.raises(SpecError) as caught:
            check_inside_uploads(spec, mine)
        assert [f for f, _ in caught.value.problems] == ["solver.inputs.1"]
    (mine / "up-1" / "link").symlink_to(tmp_path / "uploads" / "bob" / "up-2")
    linked = validate_spec({"name": "j", "solver": {"name": "command", "command": ["true"],
                                                    "inputs": ["up-1/link"]}}, base_dir=mine)
    with pytest.raises(SpecError):
        check_inside_uploads(linked, mine)
