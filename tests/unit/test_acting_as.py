"""The engine writes into a job's tree as the job's account: acting_as switches one thread's filesystem ids,
launch/restart/rerun files are written through it (a link the job planted leads nowhere root-only), and an
upload belongs to its uploader's OS account."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import threading
import time
from pathlib import Path

import pytest

from orchestrator.cluster import identity
from orchestrator.cluster.base import Node
from orchestrator.control.service import ControlService
from orchestrator.engine.lifecycle import Lifecycle
from orchestrator.engine.materialize import prepare_job_tree
from orchestrator.model.paths import JobPaths
from orchestrator.model.settings import Settings
from solvers.base import RunMode
from tests.conftest import require_root

SECRET = b"root:only:secret\n"
OLD = time.time() - 3 * 86400  # older than a day: any read would move the atime (relatime)


def _alice() -> identity.Account:
    require_root()
    return identity.lookup("alice")


def _root_only(folder: Path, name: str | None = None) -> Path:
    """A root-owned 0700 folder (with a 0600 file whose times are old when name is given)."""
    folder.mkdir(mode=0o700)
    folder.chmod(0o700)
    if name is None:
        return folder
    secret = folder / name
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    os.utime(secret, (OLD, OLD))
    return secret


def _unchanged(secret: Path) -> bool:
    st = secret.stat()
    return secret.read_bytes() == SECRET and st.st_mtime == OLD and st.st_atime == OLD


def _job(store, tmp_path: Path):
    """An OpenFOAM job of alice's (as the engine host's CLI with E2E_RUN_AS=alice), its tree provisioned."""
    tmp_path.chmod(0o711)  # pytest makes it 0700: alice must pass through to E2E_HOME, as on a real host
    case = tmp_path / "case"
    (case / "system").mkdir(parents=True)
    (case / "system" / "controlDict").write_text("application icoFoam;\nendTime 1;\nwriteInterval 1;\n")
    for path in (case, case / "system"):
        path.chmod(0o755)
    (case / "system" / "controlDict").chmod(0o644)
    settings = Settings(home=tmp_path / "home", redis_url="redis://x/0", run_as="alice")
    celery = type("C", (), {"send_task": lambda *a, **k: None})()
    job_id = ControlService(settings, store=store, celery=celery).submit_data(
        {"name": "foam", "solver": {"name": "openfoam", "application": "icoFoam", "case": str(case)}})
    lc = Lifecycle.create(store, settings)
    job = store.get_job(job_id)
    assert job.account == "alice"
    prepare_job_tree(JobPaths.for_job(settings.root, job_id), settings.root, identity.account_for("alice"))
    run = store.get_run(job_id, job.current_run)
    return lc, job, run, JobPaths.for_job(settings.root, job_id)


def _as_alice_dir(path: Path, alice: identity.Account) -> None:
    """A folder (and its parent, the run directory) as the previous attempt left it: alice's."""
    path.mkdir(parents=True, exist_ok=True)
    for folder in (path.parent, path):
        os.chown(folder, alice.uid, alice.gid)


NODE = Node("local-01", "localhost", 1, Path("/tmp"))


# (a) a restart whose controlDict the job swapped for a link to a root-only file
def test_a_restart_never_reads_or_rewrites_a_root_file_the_job_linked_in(store, tmp_path):
    alice = _alice()
    secret = _root_only(tmp_path / "rootonly", "shadow")
    lc, job, run, paths = _job(store, tmp_path)
    run_paths = paths.run(run.id, 2)
    _as_alice_dir(run_paths.root / "system", alice)
    (run_paths.root / "system" / "controlDict").symlink_to(secret)
    restart = run.model_copy(update={"mode": RunMode.RESTART.value})
    with pytest.raises(OSError, match="writing the run's files as alice: Permission denied"):
        lc._write_run_files(job, restart, [NODE], run_paths)
    assert _unchanged(secret), "root read or rewrote the file the job linked in"
    assert identity.filesystem_ids() == (0, 0)


def test_a_restart_writes_its_files_inside_as_the_account(store, tmp_path):
    alice = _alice()
    lc, job, run, paths = _job(store, tmp_path)
    run_paths = paths.run(run.id, 2)
    _as_alice_dir(run_paths.root / "system", alice)
    control = run_paths.root / "system" / "controlDict"
    control.write_text("application icoFoam;\nendTime 1;\nstopAt writeNow;\n")
    os.chown(control, alice.uid, alice.gid)
    restart = run.model_copy(update={"mode": RunMode.RESTART.value})
    lc._write_run_files(job, restart, [NODE], run_paths)
    assert "stopAt endTime;" in control.read_text()
    for made in (run_paths.wrapper, run_paths.script, run_paths.hostfile, run_paths.meta):
        assert made.stat().st_uid == alice.uid, made  # created as alice, not handed over afterwards


# (b) the run directory itself swapped for a link to a root-only folder
def test_a_run_folder_linked_to_a_root_folder_gets_nothing_written(store, tmp_path):
    _alice()
    target = _root_only(tmp_path / "cron.d")
    lc, job, run, paths = _job(store, tmp_path)
    run_paths = paths.run(run.id, 1)
    run_paths.root.symlink_to(target)
    with pytest.raises(OSError, match="as alice: Permission denied"):
        lc._write_run_files(job, run, [NODE], run_paths)
    assert os.listdir(target) == []


# (c) the switch: this thread only, and root again after
def test_acting_as_switches_this_thread_only_and_restores_root(tmp_path):
    alice = _alice()
    secret = _root_only(tmp_path / "rootonly", "key")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    tmp_path.chmod(0o711)
    inside, other = threading.Event(), {}

    def elsewhere() -> None:
        inside.wait(5)
        other["ids"] = identity.filesystem_ids()
        other["read"] = secret.read_bytes()

    thread = threading.Thread(target=elsewhere)
    thread.start()
    with identity.acting_as(alice):
        assert identity.filesystem_ids() == (alice.uid, alice.gid)
        (shared / "made").write_text("x")
        with pytest.raises(PermissionError):
            secret.read_bytes()
        inside.set()
        thread.join(5)
    assert other == {"ids": (0, 0), "read": SECRET}  # the other thread stayed root meanwhile
    assert identity.filesystem_ids() == (0, 0)
    made = (shared / "made").stat()
    assert (made.st_uid, made.st_gid) == (alice.uid, alice.gid)
    assert secret.read_bytes() == SECRET  # root again


def test_acting_as_takes_the_accounts_supplementary_groups_on_this_thread_only(tmp_path):
    alice = _alice()
    tmp_path.chmod(0o711)
    group_file = tmp_path / "root-group"   # readable by the root group: root's own supplementary group
    group_file.write_bytes(SECRET)
    group_file.chmod(0o640)
    os.chown(group_file, 0, 0)
    before = os.getgroups()
    os.setgroups([0])
    try:
        inside, other = threading.Event(), {}

        def elsewhere() -> None:
            inside.wait(5)
            other["groups"] = os.getgroups()

        thread = threading.Thread(target=elsewhere)
        thread.start()
        with identity.acting_as(alice):
            assert os.getgroups() == list(alice.groups)
            with pytest.raises(PermissionError):
                group_file.read_bytes()
            inside.set()
            thread.join(5)
        assert other == {"groups": [0]} and os.getgroups() == [0]
        assert group_file.read_bytes() == SECRET
    finally:
        os.setgroups(before)


def test_acting_as_restores_root_after_an_error_and_is_a_no_op_for_none():
    alice = _alice()
    with pytest.raises(RuntimeError), identity.acting_as(alice):
        raise RuntimeError("boom")
    assert identity.filesystem_ids() == (0, 0)
    with identity.acting_as(None):
        assert identity.filesystem_ids() == (0, 0)


# (d) uploads belong to the uploader's OS account
def test_an_upload_belongs_to_its_uploaders_os_account(store, tmp_path):
    alice = _alice()
    archive = tmp_path / "case.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("case/system/controlDict")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    store.users.create("ann", os_user="alice")
    home = tmp_path / "home"
    svc = ControlService(Settings(home=home, redis_url="redis://x/0"), store, "ann", admin=False)
    made = svc.add_upload(archive)
    folder = home / "uploads" / "ann" / made["id"]
    tree = [folder.parent, folder, *folder.rglob("*")]
    assert {(p.lstat().st_uid, p.lstat().st_gid) for p in tree} == {(alice.uid, alice.gid)}
    assert {stat.S_IMODE(p.lstat().st_mode) for p in tree if p.is_dir()} == {0o700}
    assert stat.S_IMODE((folder / "case" / "system" / "controlDict").lstat().st_mode) == 0o600
    index = home / "uploads" / ".index"
    assert all(p.lstat().st_uid == 0 for p in (index, *index.rglob("*")))  # the quota index: the engine's
    assert stat.S_IMODE((home / "uploads").stat().st_mode) == 0o711
    tmp_path.chmod(0o711)
    home.chmod(0o711)
    with identity.acting_as(alice):  # the account (and a materialize acting as it) reads its upload
        assert (folder / "case" / "system" / "controlDict").read_bytes() == b"hello"
        with pytest.raises(PermissionError):
            os.listdir(index)
