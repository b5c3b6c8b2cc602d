"""Uploads cannot escape the user's folder: absolute paths, '..', symlinks and hard links out, devices;
and a spec submitted through the API may only name folders inside the caller's uploads."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from orchestrator.api.uploads import _unpack, check_inside_uploads, path_fields
from orchestrator.model.errors import SpecError, UserError
from orchestrator.model.spec import validate_spec
from tests.resilience import record


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


def test_a_plain_case_unpacks(tmp_path):
    dest = tmp_path / "up"
    assert _unpack(archive(tmp_path / "ok.tar.gz", member("case/system/controlDict")), dest) == 1
    assert (dest / "case/system/controlDict").read_bytes() == b"x"


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
