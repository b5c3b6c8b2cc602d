"""The sync service with its real detached process (watchdog/inotify) on real folders and a real Redis."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.cluster.local import LocalBackend
from orchestrator.model.errors import InfrastructureError
from orchestrator.model.events import EventKind
from orchestrator.model.paths import JobPaths
from orchestrator.model.services import ServiceContext
from orchestrator.store.jobs import JobStore
from orchestrator.sync.results import download, results_store, store_results
from orchestrator.sync.service import SyncService

from .conftest import make_settings, wait_for

pytestmark = pytest.mark.integration

WRITER = textwrap.dedent("""
    import os, sys, time
    out = sys.argv[1]
    os.makedirs(os.path.join(out, "postProcessing"), exist_ok=True)
    for i in range(int(sys.argv[2])):
        with open(os.path.join(out, "postProcessing", f"step {i:03d}.dat"), "w") as fh:
            fh.write(f"step {i}\\n" * 100)      # written in two parts: never seen half-way
            fh.flush()
            time.sleep(0.01)
            fh.write("end\\n")
        with open(os.path.join(out, "log.solver"), "a") as fh:
            fh.write(f"Time = {i}\\n")
        time.sleep(0.25)
""")


@pytest.fixture
def ctx(redis_url, tmp_path):
    # A database of its own: a job record no engine drives must not sit at the head of the session's queue
    settings = make_settings(tmp_path / "home", redis_url + "/12", local_nodes=1)
    store = JobStore.from_url(settings.redis_url)
    job_id = store.create_job(name="sync", owner="tester", spec={}, backend="local", solver="command")
    backend = LocalBackend(settings)
    paths = JobPaths.for_job(settings.root, job_id)
    (paths.run("run-001").root / ".e2e").mkdir(parents=True)
    context = ServiceContext(job=store.get_job(job_id), spec=None, backend=backend, nodes=backend.inventory(),
                             paths=paths, store=store, settings=settings)
    yield context
    pid = (paths.sync.pid.read_text().strip() if paths.sync.pid.exists() else "")
    if pid.isdigit() and backend.group_alive(context.head, int(pid)):
        backend.signal_group(context.head, int(pid), signal.SIGKILL)


def _stop(service: SyncService, ctx: ServiceContext) -> None:
    wait_for(lambda: service.stop(ctx), 60, "the final sync to finish", poll=0.1)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_live_sync_both_ways_then_final_sync_and_checksummed_results(ctx, tmp_path):
    service = SyncService()
    run_dir, work = ctx.paths.run("run-001").root, ctx.paths.work_of("run-001")
    (run_dir / "system").mkdir()
    (run_dir / "system" / "controlDict").write_text("endTime 10;\n")
    (run_dir / "wrapper.sh").write_text("export LICENCE=secret\n")
    (run_dir / ".e2e" / "attempt-1").mkdir()
    (run_dir / ".e2e" / "attempt-1" / "wrapper.sh").write_text("export LICENCE=secret\n")
    (run_dir / ".e2e" / "attempt-1" / "exit_code").write_text("0\n")
    # Given the sync service started for the job, and a solver writing a file every quarter second
    service.start(ctx)
    wait_for(lambda: service._alive(ctx), 15, "the sync process to start")
    steps = 12
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir), str(steps)])
    try:
        # Then every output appears in the work folder, complete, while the solver still runs
        for i in range(steps):
            name = work / "postProcessing" / f"step {i:03d}.dat"
            wait_for(lambda name=name: name.exists() and name.read_text().endswith("end\n"), 15,
                     f"{name.name} in work/")
            assert name.read_text() == f"step {i}\n" * 100 + "end\n"
        # When the user edits an input on the desktop side
        (work / "system" / "controlDict").write_text("endTime 20;\n")
        # Then it reaches the run directory (so the next restart uses it)
        wait_for(lambda: (run_dir / "system" / "controlDict").read_text() == "endTime 20;\n", 15,
                 "the edited controlDict in the run directory")
    finally:
        writer.wait(60)
    service.supervise(ctx)
    assert not (work / "wrapper.sh").exists() and not (work / ".e2e").exists()
    # When the job terminates: a last line written just before the stop still makes it across
    with open(run_dir / "log.solver", "a") as fh:
        fh.write("End\n")
    _stop(service, ctx)
    assert (work / "log.solver").read_text().endswith("End\n")
    assert not service._alive(ctx)
    kinds = [e.kind for e in ctx.store.events(ctx.job_id)]
    assert EventKind.SYNC_FILE in kinds and EventKind.SYNC_STATS in kinds
    states = [e.data["state"] for e in ctx.store.events(ctx.job_id) if e.kind is EventKind.SYNC_STATE]
    assert states == ["started", "stopped"]
    # Then the results store holds every file of the work folder and the run directory, checksums matching
    summary = store_results(ctx)
    manifest = results_store(ctx.settings.root).manifest(ctx.job_id)
    listed = {f["path"]: f for f in manifest["files"]}
    expected = {f"work/{p.relative_to(ctx.paths.work)}": p for p in ctx.paths.work.rglob("*") if p.is_file()}
    expected |= {f"runs/run-001/{p.relative_to(run_dir)}": p for p in run_dir.rglob("*")
                 if p.is_file() and p.name != "wrapper.sh"}
    assert set(listed) == set(expected) and summary["files"] == len(expected)
    assert all(listed[name]["sha256"] == _sha(path) for name, path in expected.items())
    stored = Path(summary["location"])
    assert all(_sha(stored / name) == entry["sha256"] for name, entry in listed.items())
    assert "runs/run-001/.e2e/attempt-1/exit_code" in listed
    assert not any(b"LICENCE" in (stored / name).read_bytes() for name in listed), "the wrapper holds licences"
    # And a download of one folder gets those files, checked
    got = download(results_store(ctx.settings.root), ctx.job_id, "work/run-001/postProcessing", tmp_path / "dl")
    assert len(got) == steps
    assert (tmp_path / "dl" / "postProcessing" / "step 003.dat").read_text().startswith("step 3\n")
    # A damaged store is noticed, not handed out
    damaged = stored / "work/run-001/postProcessing/step 000.dat"
    os.chmod(damaged, 0o644)
    damaged.write_text("tampered")
    with pytest.raises(InfrastructureError, match="checksum"):
        download(results_store(ctx.settings.root), ctx.job_id, "work/run-001/postProcessing/step 000.dat",
                 tmp_path / "dl2")
    assert not (tmp_path / "dl2" / "step 000.dat").exists()


def test_a_dead_sync_process_is_restarted_and_a_stop_without_one_still_syncs(ctx):
    service = SyncService()
    run_dir, work = ctx.paths.run("run-001").root, ctx.paths.work_of("run-001")
    service.start(ctx)
    wait_for(lambda: service._alive(ctx), 15, "the sync process to start")
    # When the process is killed
    first = int(ctx.paths.sync.pid.read_text())
    os.killpg(first, signal.SIGKILL)
    wait_for(lambda: not service._alive(ctx), 10, "the process to die")
    # Then supervise starts another, with an event
    service.supervise(ctx)
    wait_for(lambda: service._alive(ctx), 15, "the sync process to restart")
    assert int(ctx.paths.sync.pid.read_text()) != first
    assert any(e.data.get("state") == "restarted" for e in ctx.store.events(ctx.job_id))
    (run_dir / "late.dat").write_text("written after the restart")
    wait_for(lambda: (work / "late.dat").exists(), 15, "late.dat in work/")
    # When it dies again just before terminate, stop() still gets a final pass done
    os.killpg(int(ctx.paths.sync.pid.read_text()), signal.SIGKILL)
    wait_for(lambda: not service._alive(ctx), 10, "the process to die")
    (run_dir / "final.dat").write_text("last output")
    _stop(service, ctx)
    assert (work / "final.dat").read_text() == "last output"
