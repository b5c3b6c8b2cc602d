"""Bad input, part 3: path traversal and symlink escapes against sync, edit uploads and results downloads.

Every case plants its attack (a `..` path, an absolute path, a symlink in the run directory or the work folder
pointing outside, a folder swapped for a symlink between two passes, a file swapped for one between listing
and download) and runs the engine's own code on it. An escape is a file outside the job's folders that
changed, or outside content (a secret) that turns up inside them or in a download. Must be 0.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from orchestrator.cluster.base import Node
from orchestrator.cluster.local import LocalBackend
from orchestrator.engine.edits import apply_overlay, check_files, overlay, save_files
from orchestrator.engine.runctl import RunFilesOnNode
from orchestrator.model.errors import UserError
from orchestrator.model.paths import JobPaths
from orchestrator.model.settings import Settings
from orchestrator.sync.engine import SyncPair
from orchestrator.sync.results import LiveFiles, LocalResultsStore, download
from orchestrator.sync.tree import LocalSide
from tests.resilience import record

SECRET = "OUTSIDE-SECRET-5f1c"
TRAVERSAL = ["../x", "../../outside/planted", "/etc/passwd", "a/../../b", "./../x", "a/b/../../../x", ".e2e/pid",
             "", "dir/", "a\nb", "nul\x00", "..", "/"]


class Escapes:
    """Snapshots a folder outside the job and checks that nothing in it changed and none of it leaked in."""

    def __init__(self, base: Path) -> None:
        self.outside = base / "outside"
        (self.outside / "dir").mkdir(parents=True)
        (self.outside / "secret").write_text(SECRET)
        (self.outside / "dir" / "secret").write_text(SECRET)
        self.before = self._snapshot()
        self.cases = 0
        self.found: list[str] = []

    def _snapshot(self) -> dict[str, str]:
        return {str(p.relative_to(self.outside)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "")
                for p in sorted(self.outside.rglob("*"))}

    def check(self, label: str, *inside: Path) -> None:
        self.cases += 1
        after = self._snapshot()
        if after != self.before:
            self.found.append(f"{label}: wrote outside ({sorted(set(after.items()) ^ set(self.before.items()))})")
            self.before = after
        for root in inside:
            for path in root.rglob("*") if root.exists() else ():
                if path.is_file() and not path.is_symlink() and SECRET in path.read_text(errors="replace"):
                    self.found.append(f"{label}: outside content in {path}")


@pytest.fixture
def esc(tmp_path) -> Escapes:
    return Escapes(tmp_path)


def _age(root: Path) -> None:
    old = time.time() - 60
    for path in [root, *root.rglob("*")]:
        os.utime(path, (old, old), follow_symlinks=False)


def _report(name: str, esc: Escapes, refused: int = 0) -> None:
    record(f"bad input: path escapes ({name})", esc.cases, esc.cases - len(esc.found),
           f"{len(esc.found)} escapes in {esc.cases} attacks ({refused} refused outright)", escapes=esc.found)
    assert not esc.found, "\n".join(esc.found)


# -- sync between the run directory and the desktop's work folder

def test_sync_never_follows_a_symlink_out_of_either_folder(esc, tmp_path):
    run, work = tmp_path / "run", tmp_path / "work"
    run.mkdir()
    events: list[tuple[str, dict]] = []
    pair = SyncPair("run-001", LocalSide(run), LocalSide(work), tmp_path / "state.json",
                    lambda kind, data: events.append((kind, data)), quiet=0.0)
    (run / "sub").mkdir()
    (run / "sub" / "U").write_text("velocity")
    pair.sync_once()
    for side, other in ((run, work), (work, run)):
        os.symlink(esc.outside / "secret", side / f"abs-file-{side.name}")
        os.symlink(esc.outside / "dir", side / f"abs-dir-{side.name}")
        os.symlink("../outside/secret", side / f"rel-up-{side.name}")
        os.symlink("../../outside/dir", side / f"rel-up2-{side.name}")
        (other / f"later-{side.name}").mkdir()           # a folder the other side then swaps for a symlink
        (other / f"later-{side.name}" / "f").write_text("x")
    _age(run), _age(work)
    pair.sync_once()
    esc.check("sync: outward symlinks on both sides", run, work)
    # a synced folder becomes a symlink to outside on one side, then files appear under it on the other
    for side, other in ((run, work), (work, run)):
        target = side / "sub" if side is run else side / f"later-{run.name}"
        if target.is_dir() and not target.is_symlink():
            for child in target.iterdir():
                child.unlink()
            target.rmdir()
        os.symlink(esc.outside / "dir", target)
        if (other / target.name).is_dir():
            (other / target.name / "planted").write_text("from the other side")
        _age(run), _age(work)
        pair.sync_once()
        esc.check(f"sync: {target.name} swapped for a symlink in {side.name}", run, work)
    pair.sync_once(final=True)
    esc.check("sync: final pass", run, work)
    _report("sync", esc)


# -- edit uploads: the relative path checked at the edge, then laid into run directories

def test_edit_uploads_never_land_outside_the_run_directory(esc, tmp_path):
    upload = tmp_path / "upload.txt"
    upload.write_text("endTime 2;\n")
    refused = 0
    for rel in TRAVERSAL:
        try:
            check_files({str(upload): rel})
        except UserError:
            refused += 1
        esc.check(f"edit --file {rel!r}", tmp_path / "home")
    assert refused == len(TRAVERSAL), "a traversal path was accepted by check_files"

    # a stored edit laid into a run directory whose folders the solver replaced by symlinks (restart, rerun)
    job = JobPaths.for_job(tmp_path / "home", "job1")
    upload2 = tmp_path / "upload2.txt"
    upload2.write_text("more\n")
    save_files(job, 2, check_files({str(upload): "system/controlDict", str(upload2): "constant/more/f"}))
    run_dir = job.run("run-001").root
    run_dir.mkdir(parents=True)
    os.symlink(esc.outside / "dir", run_dir / "system")
    (run_dir / "constant").mkdir()
    os.symlink(os.path.relpath(esc.outside, run_dir / "constant"), run_dir / "constant" / "more")
    try:
        apply_overlay(overlay(job, 2), run_dir)
    except UserError:
        refused += 1
    esc.check("overlay through symlinked folders", tmp_path / "home")

    # a temp name planted as a symlink next to the file the overlay replaces
    other = job.run("run-002").root
    (other / "system").mkdir(parents=True)
    (other / "system" / "controlDict").write_text("endTime 1;\n")
    os.symlink(esc.outside / "secret", other / "system" / ".controlDict.e2e-tmp")
    try:
        apply_overlay(overlay(job, 2), other)
    except (UserError, OSError):
        refused += 1
    esc.check("overlay onto a planted temp symlink", tmp_path / "home")

    # a live edit writes into the running run directory through the backend
    backend = LocalBackend(Settings(home=tmp_path / "home", redis_url="redis://unused:1/0"))
    node = Node("node-01", "localhost", 1, tmp_path / "home" / "nodes" / "node-01")
    for label, root, rel in (("symlinked folder", run_dir, "system/controlDict"),
                             ("planted temp symlink", other, "system/controlDict")):
        tmp = other / "system" / ".controlDict.e2e-tmp"
        if not os.path.lexists(tmp):
            os.symlink(esc.outside / "secret", tmp)
        try:
            RunFilesOnNode(backend, node, root).write_text(rel, "endTime 3;\n")
        except (UserError, OSError):
            refused += 1
        esc.check(f"live edit through a {label}", tmp_path / "home")
    _report("edit uploads", esc, refused)


# -- results and live files, and the folder a download writes into

def test_downloads_never_read_or_write_outside(esc, tmp_path):
    work, run = tmp_path / "job" / "work", tmp_path / "job" / "runs" / "run-001"
    (work / "run-001").mkdir(parents=True)
    run.mkdir(parents=True)
    (work / "run-001" / "log").write_text("log")
    (run / "U").write_text("velocity")
    os.symlink(esc.outside / "secret", run / "abs-link")
    os.symlink("../../../outside/secret", run / "rel-link")
    os.symlink(esc.outside / "dir", run / "dir-link")
    store = LocalResultsStore(tmp_path / "home")
    manifest = store.put("job1", {"work": work, "runs/run-001": run})
    esc.check("results: outward symlinks stored", tmp_path / "home")
    assert {link["path"] for link in manifest["links"]} == set(), "an outward symlink was stored"
    refused = 0
    to = tmp_path / "download"
    for rel in TRAVERSAL + ["runs/run-001/abs-link", "runs/run-001/dir-link/secret", "runs/run-001/rel-link"]:
        try:
            download(store, "job1", rel, to)
        except UserError:
            refused += 1
        esc.check(f"download {rel!r}", to)
    # the download folder holds a symlink where a downloaded folder goes
    to2 = tmp_path / "download2"
    to2.mkdir()
    os.symlink(esc.outside / "dir", to2 / "runs")
    try:
        download(store, "job1", None, to2)
    except UserError:
        refused += 1
    esc.check("download into a folder with a symlink on the way", to2)

    # live files: listed, then a listed file is swapped for a symlink to outside before the download reads it
    live = LiveFiles({"work": work})
    listed = live.manifest("job1")
    assert [f["path"] for f in listed["files"]] == ["work/run-001/log"]
    (work / "run-001" / "log").unlink()
    os.symlink(esc.outside / "secret", work / "run-001" / "log")
    to3 = tmp_path / "download3"

    class Frozen(LiveFiles):  # the listing the user saw, before the swap
        def manifest(self, job_id):
            return listed
    try:
        download(Frozen({"work": work}), "job1", "work/run-001/log", to3)
    except (UserError, OSError):
        refused += 1
    esc.check("live download of a file swapped for a symlink", to3)
    _report("downloads", esc, refused)
