"""The local results store: what goes in, the sha256 manifest, downloads (confined, verified), live listing."""

from __future__ import annotations

import hashlib
import os

import pytest
from test_sync_engine import HOSTILE  # tests/unit is on sys.path (no package)

from orchestrator.model.errors import InfrastructureError, NotFound, UserError
from orchestrator.sync.results import LiveFiles, LocalResultsStore, download


@pytest.fixture
def job(tmp_path):
    work, run = tmp_path / "job" / "work", tmp_path / "job" / "runs" / "run-001"
    (work / "run-001").mkdir(parents=True)
    (run / ".e2e" / "attempt-1").mkdir(parents=True)
    for i, name in enumerate(HOSTILE):
        (work / "run-001" / name).write_text(f"w{i}")
    (run / "big.bin").write_bytes(os.urandom(2 << 20))
    (work / "run-001" / "big.bin").write_bytes((run / "big.bin").read_bytes())
    (run / ".e2e" / "attempt-1" / "wrapper.sh").write_text("export LICENCE=1")
    (run / ".e2e" / "attempt-1" / "exit_code").write_text("0")
    (run / "case.lock").write_text("scratch")
    os.symlink("/etc/passwd", run / "escape")
    os.symlink("big.bin", run / "inner")
    store = LocalResultsStore(tmp_path / "home")
    manifest = store.put("job1", {"work": work, "runs/run-001": run})
    return store, manifest, work, run


def test_every_file_is_stored_with_its_sha256_and_nothing_else(job):
    store, manifest, _, _ = job
    names = {f["path"] for f in manifest["files"]}
    assert names == ({f"work/run-001/{n}" for n in [*HOSTILE, "big.bin"]}
                     | {"runs/run-001/big.bin", "runs/run-001/.e2e/attempt-1/exit_code"})
    for entry in manifest["files"]:
        with store.open("job1", entry["path"]) as fh:
            assert hashlib.sha256(fh.read()).hexdigest() == entry["sha256"]
    assert manifest["links"] == [{"path": "runs/run-001/inner", "target": "big.bin"}]
    assert store.manifest("job1") == manifest
    stored = store.folder("job1")
    assert os.stat(stored / "work/run-001/big.bin").st_ino == os.stat(stored / "runs/run-001/big.bin").st_ino


def test_storing_again_replaces_the_earlier_copy(job):
    store, _, work, run = job
    (work / "run-001" / "big.bin").unlink()
    again = store.put("job1", {"work": work, "runs/run-001": run})
    assert "work/run-001/big.bin" not in {f["path"] for f in again["files"]}
    assert not (store.folder("job1") / "work/run-001/big.bin").exists()


def test_download_names_things_like_cp_and_checks_every_file(job, tmp_path):
    store, manifest, _, _ = job
    got = download(store, "job1", "work/run-001", tmp_path / "a")
    assert sorted(got) == sorted(f"run-001/{n}" for n in [*HOSTILE, "big.bin"])
    assert (tmp_path / "a" / "run-001" / HOSTILE[2]).read_text() == "w2"
    assert download(store, "job1", "runs/run-001/big.bin", tmp_path / "b") == ["big.bin"]
    assert len(download(store, "job1", None, tmp_path / "c")) == len(manifest["files"])


@pytest.mark.parametrize("path", ["../job2", "work/../../x", "work/./run-001", "nul\x00"])
def test_download_refuses_paths_that_leave_the_results(job, tmp_path, path):
    with pytest.raises(UserError, match="stay inside|NUL"):
        download(job[0], "job1", path, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_download_of_a_missing_path_or_job_says_so(job, tmp_path):
    with pytest.raises(NotFound, match="no stored file"):
        download(job[0], "job1", "work/nope", tmp_path / "d")
    with pytest.raises(NotFound, match="no stored results"):
        download(job[0], "job2", None, tmp_path / "d")


def test_a_damaged_file_is_not_handed_out(job, tmp_path):
    store = job[0]
    target = store.folder("job1") / "work/run-001" / HOSTILE[0]
    target.write_text("changed behind our back")
    with pytest.raises(InfrastructureError, match="checksum"):
        download(store, "job1", f"work/run-001/{HOSTILE[0]}", tmp_path / "d")
    assert not (tmp_path / "d" / HOSTILE[0]).exists()


def test_live_files_list_what_the_results_will_hold(job, tmp_path):
    store, stored, work, run = job
    live = LiveFiles({"work": work, "runs/run-001": run})
    listed = live.manifest("job1")
    # the same names as the stored results (a job without a desktop has no live sync into work/: its run
    # directories are what there is to see while it runs)
    assert listed["live"] and {f["path"] for f in listed["files"]} == {f["path"] for f in stored["files"]}
    assert download(live, "job1", "work/run-001/big.bin", tmp_path / "l") == ["big.bin"]
    assert download(live, "job1", "runs/run-001/big.bin", tmp_path / "r") == ["big.bin"]
    assert (tmp_path / "r" / "big.bin").read_bytes() == (run / "big.bin").read_bytes()
    for hidden in ("runs/run-001/.e2e/attempt-1/wrapper.sh", "runs/run-001/case.lock", "elsewhere/big.bin"):
        with pytest.raises(NotFound):
            live.open("job1", hidden)


def test_a_job_without_any_file_still_gets_its_results_stored(tmp_path):
    # a job terminated before its run wrote anything (or made its folders): terminate must still finish
    store = LocalResultsStore(tmp_path / "home")
    manifest = store.put("job2", {"work": tmp_path / "no-work", "runs/run-001": tmp_path / "no-run"})
    assert manifest["files"] == [] and store.manifest("job2")["files"] == []
