"""A user's uploads: the per-upload cap and the per-user quota (refusals name the usage and leave nothing
behind), listing and deleting one's own (another user's id answers as one that does not exist), refusing to
delete an upload a job not yet terminated still uses, and the folders private to the engine."""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import uploads as uploads_cli
from orchestrator.cli.main import app
from orchestrator.control.service import ControlService
from orchestrator.control.unpack import TooLarge
from orchestrator.model.errors import InvalidState, NotFound
from orchestrator.model.settings import Settings
from orchestrator.model.states import JobState


def settings(tmp_path: Path, **overrides) -> Settings:
    values = {"home": tmp_path / "home", "redis_url": "redis://127.0.0.1:1/0", "api_max_upload": 1000}
    return Settings(**{**values, **overrides})


def tarball(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / f"{name}-{size}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(f"{name}/data.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(b"d" * size))
    return path


def client(store, tmp_path: Path, user: str, admin: bool = False, **overrides) -> ControlService:
    return ControlService(settings(tmp_path, **overrides), store, user, admin=admin)


def leftovers(tmp_path: Path) -> list[str]:
    """Anything an upload left in the folders where archives are received and unpacked."""
    incoming = tmp_path / "home" / "uploads" / ".incoming"
    return sorted(p.name for p in incoming.iterdir()) if incoming.exists() else []


def test_defaults_are_multiples_of_the_upload_limit():
    plain = Settings(redis_url="redis://unused", api_max_upload=1000)
    assert (plain.max_extracted, plain.quota) == (4000, 10_000)
    assert Settings(redis_url="redis://unused", upload_max_extracted=5, upload_quota=7).max_extracted == 5


def test_one_upload_is_capped_at_four_times_the_upload_limit_by_default(store, tmp_path):
    alice = client(store, tmp_path, "alice", upload_quota=10**9)
    made = alice.add_upload(tarball(tmp_path, "ok", 4000))
    assert (made["bytes"], made["files"], made["name"]) == (4000, 1, "ok")
    with pytest.raises(TooLarge) as refused:
        alice.add_upload(tarball(tmp_path, "bomb", 4001))
    assert "more than 3.9 KiB (4000 bytes, E2E_UPLOAD_MAX_EXTRACTED)" in refused.value.message
    assert [row["id"] for row in alice.uploads()] == [made["id"]] and leftovers(tmp_path) == []


def test_the_quota_counts_every_upload_of_the_user_and_names_the_usage(store, tmp_path):
    alice = client(store, tmp_path, "alice", upload_quota=5000)
    first = alice.add_upload(tarball(tmp_path, "a", 3000))
    with pytest.raises(TooLarge) as over:
        alice.add_upload(tarball(tmp_path, "b", 2500))
    assert "alice's upload quota" in over.value.message and "2.9 KiB of 4.9 KiB" in over.value.message
    assert "2.0 KiB left" in over.value.message and leftovers(tmp_path) == []
    second = alice.add_upload(tarball(tmp_path, "b", 2000))  # exactly up to the quota
    with pytest.raises(TooLarge, match="upload quota reached: alice's uploads hold 4.9 KiB of their 4.9 KiB"):
        alice.add_upload(tarball(tmp_path, "c", 1))
    # bob's quota is his own; deleting frees alice's
    assert client(store, tmp_path, "bob", upload_quota=5000).add_upload(tarball(tmp_path, "b", 4000))["bytes"] == 4000
    assert alice.remove_upload(first["id"]) == {"id": first["id"], "bytes": 3000}
    third = alice.add_upload(tarball(tmp_path, "c", 3000))
    assert [(row["id"], row["bytes"]) for row in alice.uploads()] == [(second["id"], 2000), (third["id"], 3000)]


def test_another_users_upload_answers_exactly_as_one_that_does_not_exist(store, tmp_path):
    alice, bob = client(store, tmp_path, "alice"), client(store, tmp_path, "bob")
    made = alice.add_upload(tarball(tmp_path, "case", 10))
    own = bob.add_upload(tarball(tmp_path, "own", 10))  # bob's folder exists: '../alice/...' would resolve
    assert [row["id"] for row in bob.uploads()] == [own["id"]]
    assert [row["id"] for row in alice.uploads()] == [made["id"]]
    with pytest.raises(NotFound) as theirs:
        bob.remove_upload(made["id"])
    with pytest.raises(NotFound) as missing:
        bob.remove_upload("up-000000000000")
    assert theirs.value.message.replace(made["id"], "ID") == missing.value.message.replace("up-000000000000", "ID")
    for sneaky in ["../alice/" + made["id"], "..", "up-../../x", ""]:
        with pytest.raises(NotFound):
            bob.remove_upload(sneaky)
    assert [row["id"] for row in bob.uploads(owner="alice")] == [own["id"]]  # a plain user sees only theirs
    root = client(store, tmp_path, "root", admin=True)
    assert [row["id"] for row in root.uploads(owner="alice")] == [made["id"]]
    assert (tmp_path / "home" / "uploads" / "alice" / made["id"]).is_dir()


def test_an_upload_a_job_not_yet_terminated_uses_cannot_be_deleted(store, tmp_path):
    alice = client(store, tmp_path, "alice")
    made = alice.add_upload(tarball(tmp_path, "case", 10))
    spare = alice.add_upload(tarball(tmp_path, "spare", 10))
    folder = tmp_path / "home" / "uploads" / "alice" / made["id"] / "case"
    spec = {"name": "j", "desktop": {"enabled": False},
            "solver": {"name": "command", "command": ["true"], "inputs": [str(folder.resolve())]}}
    job_id = store.create_job(name="j", owner="alice", spec=spec, backend="local", solver="command")
    assert {row["id"]: row["used_by"] for row in alice.uploads()} == {made["id"]: [job_id], spare["id"]: []}
    with pytest.raises(InvalidState, match=f"used by 1 job\\(s\\) not yet terminated: {job_id}"):
        alice.remove_upload(made["id"])
    assert folder.is_dir()
    store.transition_job(job_id, JobState.TERMINATING)
    store.transition_job(job_id, JobState.TERMINATED)
    assert alice.remove_upload(made["id"])["bytes"] == 10 and not folder.exists()
    assert [row["id"] for row in alice.uploads()] == [spare["id"]]


def test_the_upload_folders_are_the_engines_alone(store, tmp_path):
    home = tmp_path / "home"
    (home / "uploads" / "alice").mkdir(parents=True, mode=0o755)  # an older engine made them world-readable
    (home / "uploads").chmod(0o755)
    made = client(store, tmp_path, "alice").add_upload(tarball(tmp_path, "case", 10))
    for folder in [home / "uploads", home / "uploads" / "alice", home / "uploads" / "alice" / made["id"],
                   home / "uploads" / "alice" / made["id"] / "case", home / "uploads" / ".index" / "alice"]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE((home / "uploads" / "alice" / made["id"] / "case" / "data.bin").stat().st_mode) == 0o600


def test_an_upload_made_before_the_index_is_listed_with_its_size(store, tmp_path):
    legacy = tmp_path / "home" / "uploads" / "alice" / "up-0123456789ab" / "case"
    legacy.mkdir(parents=True)
    (legacy / "f").write_bytes(b"x" * 42)
    [row] = client(store, tmp_path, "alice").uploads()
    assert (row["id"], row["bytes"], row["files"], row["name"]) == ("up-0123456789ab", 42, 1, "case")


def test_the_cli_lists_and_removes_uploads(store, tmp_path, monkeypatch):
    local = client(store, tmp_path, "alice", admin=True)
    made = local.add_upload(tarball(tmp_path, "case", 10))
    monkeypatch.setattr(uploads_cli, "_client", lambda: local)
    runner = CliRunner()
    listed = runner.invoke(app, ["uploads", "ls"])
    assert listed.exit_code == 0 and made["id"] in listed.output and "case" in listed.output
    removed = runner.invoke(app, ["uploads", "rm", made["id"]])
    assert removed.exit_code == 0 and f"removed {made['id']} (10 bytes freed)" in removed.output
    assert "no uploads" in runner.invoke(app, ["uploads", "ls"]).output
