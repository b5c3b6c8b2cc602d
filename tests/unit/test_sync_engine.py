"""The sync engine on real folders: both directions, conflicts, deletions, excludes, names, symlinks, appends."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from orchestrator.model.errors import UserError
from orchestrator.sync.confine import check_rel, confined
from orchestrator.sync.copy import LocalCopier
from orchestrator.sync.engine import SyncPair
from orchestrator.sync.tree import LocalSide

HOSTILE = ["with space.dat", "quote'\"s.txt", "new\nline", "ünïcødé-数据.vtk", "-leading-dash", "$(touch x)",
           "back\\slash", "tab\tname"]


@pytest.fixture
def pair(tmp_path):
    events: list[tuple[str, dict]] = []
    run, work = tmp_path / "run", tmp_path / "work"
    run.mkdir()

    def make(**kw):
        kw.setdefault("quiet", 0.0)
        return SyncPair("run-001", LocalSide(run), LocalSide(work), tmp_path / "state.json",
                        lambda kind, data: events.append((kind, data)), **kw)
    sp = make()
    sp.run, sp.work, sp.events, sp.make = run, work, events, make
    return sp


def age(path, seconds=10.0):
    """Make a file look written `seconds` ago (past the quiet period)."""
    t = time.time() - seconds
    os.utime(path, (t, t), follow_symlinks=False)


def test_solver_outputs_reach_the_work_folder_with_content_and_mtime(pair):
    (pair.run / "0.1" / "U").parent.mkdir()
    (pair.run / "0.1" / "U").write_text("velocity")
    (pair.run / "log.simpleFoam").write_text("Time = 1\n")
    result = pair.sync_once()
    assert (pair.work / "0.1" / "U").read_text() == "velocity"
    assert (pair.work / "log.simpleFoam").read_text() == "Time = 1\n"
    assert os.stat(pair.work / "0.1" / "U").st_mtime_ns == os.stat(pair.run / "0.1" / "U").st_mtime_ns
    assert result.files == 2 and result.bytes == len("velocity") + len("Time = 1\n")
    assert sorted(d["path"] for k, d in pair.events if k == "sync.file") == ["0.1/U", "log.simpleFoam"]
    # A second pass with nothing changed moves nothing and says nothing
    before = len(pair.events)
    assert pair.sync_once().files == 0 and len(pair.events) == before


def test_desktop_edit_reaches_the_run_directory(pair):
    (pair.run / "system").mkdir()
    (pair.run / "system" / "controlDict").write_text("endTime 10;")
    pair.sync_once()
    (pair.work / "system" / "controlDict").write_text("endTime 20;")
    (pair.work / "notes.md").write_text("mine")
    pair.sync_once()
    assert (pair.run / "system" / "controlDict").read_text() == "endTime 20;"
    assert (pair.run / "notes.md").read_text() == "mine"


def test_both_sides_changed_keeps_both_and_reports_a_conflict(pair):
    (pair.run / "p").write_text("v1")
    pair.sync_once()
    (pair.run / "p").write_text("solver v2")
    (pair.work / "p").write_text("user v2!")
    pair.sync_once()
    pair.sync_once()  # the desktop's copy travels to the run directory too
    conflict = [d for k, d in pair.events if k == "sync.conflict"]
    assert len(conflict) == 1 and conflict[0]["path"] == "p"
    saved = conflict[0]["desktop_copy"]
    assert saved.startswith("p.conflict-desktop-")
    assert (pair.run / "p").read_text() == (pair.work / "p").read_text() == "solver v2"
    assert (pair.work / saved).read_text() == (pair.run / saved).read_text() == "user v2!"


def test_same_change_on_both_sides_is_not_a_conflict(pair):
    (pair.run / "p").write_text("v1")
    pair.sync_once()
    (pair.run / "p").write_text("same")
    (pair.work / "p").write_text("same")
    pair.sync_once()
    assert not [k for k, _ in pair.events if k == "sync.conflict"]


def test_deletions_travel_and_a_modification_beats_a_deletion(pair):
    for name in ("gone", "kept"):
        (pair.run / name).write_text(name)
    (pair.run / "old").mkdir()
    (pair.run / "old" / "f").write_text("x")
    pair.sync_once()
    (pair.run / "gone").unlink()
    (pair.run / "old" / "f").unlink()
    (pair.run / "old").rmdir()
    (pair.work / "kept").unlink()
    (pair.run / "kept").write_text("changed by the solver")
    pair.sync_once()
    assert not (pair.work / "gone").exists() and not (pair.work / "old").exists()
    assert (pair.work / "kept").read_text() == "changed by the solver"


def test_bookkeeping_scratch_and_lock_files_are_not_synced(pair):
    (pair.run / ".e2e").mkdir()
    (pair.run / ".e2e" / "pid").write_text("1")
    for name in ("wrapper.sh", "core", "core.1234", "case.lock", "x.swp", ".~lock.a.ods#", "scratch.tmp"):
        (pair.run / name).write_text("no")
    (pair.run / "sub").mkdir()
    (pair.run / "sub" / "wrapper.sh").write_text("a user file of that name deeper down is synced")
    pair.sync_once()
    assert sorted(str(p.relative_to(pair.work)) for p in pair.work.rglob("*")) == ["sub", "sub/wrapper.sh"]


def test_hostile_names_sync_both_ways(pair):
    for i, name in enumerate(HOSTILE):
        (pair.run / name).write_text(f"run {i}")
    pair.sync_once()
    for i, name in enumerate(HOSTILE):
        assert (pair.work / name).read_text() == f"run {i}"
        (pair.work / name).write_text(f"desktop {i}")
    pair.sync_once()
    for i, name in enumerate(HOSTILE):
        assert (pair.run / name).read_text() == f"desktop {i}"
    assert not (pair.run / "x").exists() and not (pair.work / "x").exists()


def test_escaping_symlinks_are_refused_and_inner_ones_kept(pair, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("top secret")
    os.symlink(secret, pair.run / "abs-link")
    os.symlink("../secret/key", pair.run / "rel-escape")
    (pair.run / "data").write_text("d")
    os.symlink("data", pair.run / "inner-link")
    pair.sync_once()
    assert not os.path.lexists(pair.work / "abs-link") and not os.path.lexists(pair.work / "rel-escape")
    assert os.readlink(pair.work / "inner-link") == "data"
    assert "top secret" not in "".join(p.read_text() for p in pair.work.rglob("*") if p.is_file())
    skipped = sorted(d["path"] for k, d in pair.events if k == "sync.skip")
    assert skipped == ["abs-link", "rel-escape"]
    # the desktop side cannot plant an escaping link in the run directory either
    os.symlink("/etc", pair.work / "etc-link")
    pair.sync_once()
    assert not os.path.lexists(pair.run / "etc-link")


def test_writes_through_a_symlinked_folder_are_refused(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "root" / "dir")
    with pytest.raises(UserError):
        confined(tmp_path / "root", "dir/file")


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a/../../b", "", "a//b", "a/./b", "nul\x00", "a/"])
def test_paths_that_could_escape_are_rejected(rel):
    with pytest.raises(UserError):
        check_rel(rel)


def test_a_file_still_being_written_waits_for_a_quiet_moment(pair):
    slow = pair.make(quiet=30.0, max_defer=60.0)
    (pair.run / "fresh").write_text("half")
    result = slow.sync_once()
    assert not (pair.work / "fresh").exists() and result.due is not None
    age(pair.run / "fresh", 60)
    slow.sync_once()
    assert (pair.work / "fresh").read_text() == "half"


def test_a_file_that_never_stops_changing_goes_across_after_max_defer(pair):
    impatient = pair.make(quiet=30.0, max_defer=0.0)
    (pair.run / "log").write_text("growing")
    impatient.sync_once()
    assert (pair.work / "log").read_text() == "growing"


def test_the_final_pass_takes_files_as_they_are(pair):
    slow = pair.make(quiet=30.0, max_defer=60.0)
    (pair.run / "fresh").write_text("last words")
    slow.sync_once(final=True)
    assert (pair.work / "fresh").read_text() == "last words"


def test_a_source_that_changed_since_the_scan_is_not_copied(tmp_path):
    src, dst = LocalSide(tmp_path / "a"), LocalSide(tmp_path / "b")
    src.root.mkdir()
    (src.root / "f").write_text("one")
    seen = src.stat("f")
    (src.root / "f").write_text("one two")
    assert LocalCopier().copy(src, dst, "f", seen, None, dst_is_ours=False) is None
    assert not (dst.root / "f").exists() and not (dst.root.exists() and list(dst.root.iterdir()))


@pytest.mark.parametrize("existed", [False, True])
def test_an_edit_written_while_a_copy_runs_is_kept_and_goes_back(pair, monkeypatch, existed):
    # the pass decided to copy params.txt to the desktop; the user saves their own version before it finishes
    (pair.run / "params.txt").write_text("value=1\n")
    age(pair.run / "params.txt")
    if existed:
        pair.sync_once()
        (pair.run / "params.txt").write_text("value=1 (the solver's update)\n")
        age(pair.run / "params.txt")
    import orchestrator.sync.copy as copy_module

    real = copy_module._copy_range

    def user_saves_meanwhile(fin, fout, offset, length):
        sent = real(fin, fout, offset, length)
        (pair.work / "params.txt").write_text("value=2\n")
        return sent
    monkeypatch.setattr(copy_module, "_copy_range", user_saves_meanwhile)
    pair.sync_once()
    monkeypatch.setattr(copy_module, "_copy_range", real)
    assert (pair.work / "params.txt").read_text() == "value=2\n"  # not replaced by the copy in flight
    age(pair.work / "params.txt")
    pair.sync_once()
    # the next pass sends the edit to the run directory, as any desktop edit (no conflict: the copy never landed)
    assert (pair.run / "params.txt").read_text() == "value=2\n"
    assert not [k for k, _ in pair.events if k == "sync.conflict"]


def test_an_append_sends_only_the_new_bytes(pair):
    big = pair.run / "series.dat"
    big.write_bytes(os.urandom(3 << 20))
    age(big, 20)
    pair.sync_once()
    with open(big, "ab") as fh:
        fh.write(os.urandom(1 << 20))
    age(big, 5)
    result = pair.sync_once()
    assert result.bytes == 1 << 20
    assert (pair.work / "series.dat").read_bytes() == big.read_bytes()
    assert [d["action"] for k, d in pair.events if k == "sync.file"][-1] == "appended"


def test_a_rewrite_that_keeps_the_head_and_tail_is_copied_whole(pair):
    big = pair.run / "field.bin"
    data = bytearray(os.urandom(2 << 20))
    big.write_bytes(data)
    age(big, 20)
    pair.sync_once()
    data[(1 << 20) + 100] ^= 0xFF                 # a change in the middle of the old content...
    big.write_bytes(bytes(data) + b"more")        # ...plus growth: must not be taken for an append
    age(big, 5)
    result = pair.sync_once()
    assert result.bytes == len(data) + 4
    assert (pair.work / "field.bin").read_bytes() == big.read_bytes()


def test_state_survives_a_restart_of_the_sync(pair):
    (pair.run / "a").write_text("a")
    pair.sync_once()
    again = pair.make()
    assert again.sync_once().files == 0
    (pair.work / "a").write_text("edited while the sync was down")
    again.sync_once()
    assert (pair.run / "a").read_text() == "edited while the sync was down"


def test_a_pass_over_changed_folders_lists_only_those(pair):
    for folder in ("a", "b"):
        (pair.run / folder).mkdir()
        (pair.run / folder / "f").write_text("1")
    pair.sync_once()
    (pair.run / "a" / "f").write_text("2")
    (pair.run / "b" / "f").write_text("2")
    pair.sync_once(dirty={"a"})
    assert (pair.work / "a" / "f").read_text() == "2"
    assert (pair.work / "b" / "f").read_text() == "1", "b was not reported changed: left to the full rescan"
    pair.sync_once()
    assert (pair.work / "b" / "f").read_text() == "2"


def test_a_new_folder_is_listed_whole_and_a_removed_one_is_removed(pair):
    (pair.run / "new" / "deep").mkdir(parents=True)
    (pair.run / "new" / "deep" / "U").write_text("u")   # written before any watch on new/ could exist
    pair.sync_once(dirty={""})
    assert (pair.work / "new" / "deep" / "U").read_text() == "u"
    shutil.rmtree(pair.run / "new")
    pair.sync_once(dirty={"", "new", "new/deep"})
    assert not (pair.work / "new").exists()


def test_a_changed_folder_that_became_a_symlink_is_not_listed(pair, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    (pair.run / "sub").mkdir()
    pair.sync_once()
    (pair.run / "sub").rmdir()
    os.symlink(outside, pair.run / "sub")
    pair.sync_once(dirty={"", "sub"})
    assert not (pair.work / "sub" / "secret").exists()


def test_a_deferred_file_is_looked_at_again_without_new_events(pair):
    slow = pair.make(quiet=0.3, max_defer=60.0)
    (pair.run / "out").mkdir()
    (pair.run / "out" / "f").write_text("being written")
    slow.sync_once(dirty={"out"})
    assert slow.has_pending and not (pair.work / "out" / "f").exists()
    age(pair.run / "out" / "f")
    slow.sync_once(dirty=set())
    assert (pair.work / "out" / "f").read_text() == "being written" and not slow.has_pending


def test_a_file_that_becomes_a_folder_follows(pair):
    (pair.run / "probe").write_text("a file first")
    pair.sync_once()
    (pair.run / "probe").unlink()
    (pair.run / "probe").mkdir()
    (pair.run / "probe" / "inside").write_text("then a folder")
    pair.sync_once()
    assert (pair.work / "probe" / "inside").read_text() == "then a folder"


def test_empty_folders_and_identical_files_are_remembered_across_restarts(pair):
    (pair.run / "empty").mkdir()
    (pair.run / "same").write_text("x")
    (pair.work).mkdir()
    (pair.work / "same").write_text("x")
    pair.sync_once()
    assert (pair.work / "empty").is_dir()
    assert set(pair.make().state) == {"empty", "same"}
