"""Sync through the real engine (Redis, Celery worker and beat, the `command` solver): live both ways
during a job, a final sync on terminate, and every file in the results store with matching checksums."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cluster.local import LocalBackend
from orchestrator.model.events import EventKind
from orchestrator.model.paths import JobPaths
from orchestrator.model.services import ServiceContext
from orchestrator.model.states import JobState
from orchestrator.sync.results import results_store, store_results

from .conftest import texts, wait_for

pytestmark = pytest.mark.integration
E2E = str(Path(sys.executable).parent / "e2e")

# Each step the "solver" copies its input into a new output, so a desktop edit shows up in later outputs.
SOLVER = ('mkdir -p "out dir"; for i in $(seq -w 1 80); do cat params.txt > "out dir/step $i.txt"; '
          'echo "progress: $i/80"; sleep 0.2; done')


def test_sync_runs_with_the_job_and_results_are_complete_after_terminate(engine, tmp_path):
    (tmp_path / "params.txt").write_text("value=1\n")
    client = engine.client
    job_id = client.submit_data({"name": "sync-live", "solver": {
        "name": "command", "command": ["bash", "-c", SOLVER], "inputs": [str(tmp_path / "params.txt")]}})
    paths = JobPaths.for_job(engine.settings.root, job_id)
    work = paths.work_of("run-001")
    # Given the job is up and its solver writing: outputs appear in the desktop's work folder
    wait_for(lambda: (work / "out dir" / "step 02.txt").exists(), 60, "the first outputs in work/run-001")
    assert (work / "out dir" / "step 02.txt").read_text() == "value=1\n"
    assert not (work / "wrapper.sh").exists() and not (work / ".e2e").exists()
    # When the user edits the input on the desktop
    (work / "params.txt").write_text("value=2\n")
    # Then it reaches the run directory, the running solver uses it, and its new outputs come back
    wait_for(lambda: (paths.run("run-001").root / "params.txt").read_text() == "value=2\n", 30,
             "the edit in the run directory")
    wait_for(lambda: "value=2\n" in texts(work / "out dir"), 30,
             "an output written from the edited input")
    wait_for(lambda: any(e.kind is EventKind.SYNC_FILE for e in client.events(job_id)), 30,
             "sync events in the job's stream")
    # And `e2e files` lists the live work folder while the job is up
    live = json.loads(e2e(engine, "files", job_id, "--json").stdout)
    assert live["live"] and "work/run-001/params.txt" in {f["path"] for f in live["files"]}
    # When the job is terminated
    client.terminate(job_id)
    doc = engine.wait_job_terminal(job_id, timeout=120)
    assert doc.state is JobState.TERMINATED
    events = client.events(job_id)
    states = [e.data["state"] for e in events if e.kind is EventKind.SYNC_STATE]
    assert states[0] == "started" and states[-1] == "stopped", states
    # Then the final sync left both sides equal (the last step made it across)
    run_dir = paths.run("run-001").root
    outputs = sorted(p.name for p in (run_dir / "out dir").iterdir())
    assert sorted(p.name for p in (work / "out dir").iterdir()) == outputs
    assert (work / "out dir" / outputs[-1]).read_text() == (run_dir / "out dir" / outputs[-1]).read_text()
    # And the results store holds every file of the work folder and of the run, with matching checksums
    backend = LocalBackend(engine.settings)
    ctx = ServiceContext(job=client.job(job_id), spec=None, backend=backend, nodes=backend.inventory()[:1],
                         paths=paths, store=client.store, settings=engine.settings)
    summary = store_results(ctx)
    manifest = {f["path"]: f["sha256"] for f in results_store(engine.settings.root).manifest(job_id)["files"]}
    expected = {f"work/{p.relative_to(paths.work)}": p for p in paths.work.rglob("*") if p.is_file()}
    expected |= {f"runs/run-001/{p.relative_to(run_dir)}": p for p in run_dir.rglob("*")
                 if p.is_file() and p.name != "wrapper.sh"}
    assert set(manifest) == set(expected) and summary["files"] == len(expected)
    for name, path in expected.items():
        assert manifest[name] == hashlib.sha256(path.read_bytes()).hexdigest(), name
    # And the CLI lists and downloads them, refusing paths that leave the results
    listed = json.loads(e2e(engine, "files", job_id[:6], "--json").stdout)
    assert {f["path"]: f["sha256"] for f in listed["files"]} == manifest
    e2e(engine, "download", job_id, "work/run-001/out dir", "--to", str(tmp_path / "dl"))
    assert sorted(p.name for p in (tmp_path / "dl" / "out dir").iterdir()) == outputs
    bad = e2e(engine, "download", job_id, "../../etc", "--to", str(tmp_path / "dl2"), check=False)
    assert bad.returncode == 2 and "stay inside" in bad.stderr and "Traceback" not in bad.stderr


def test_a_batch_job_on_shared_storage_has_no_sync_process_and_its_live_files_are_its_run(engine, tmp_path):
    (tmp_path / "params.txt").write_text("value=1\n")
    client = engine.client
    job_id = client.submit_data({"name": "no-sync", "desktop": {"enabled": False}, "solver": {
        "name": "command", "command": ["bash", "-c", SOLVER], "inputs": [str(tmp_path / "params.txt")]}})
    paths = JobPaths.for_job(engine.settings.root, job_id)
    run_dir = paths.run("run-001").root
    # Given the job runs and its solver writes (no desktop: nothing consumes a copy in the work folder)
    wait_for(lambda: (run_dir / "out dir" / "step 03.txt").exists(), 60, "the first outputs in runs/run-001")
    # Then no sync process was started for it (the engine spent no process on this job)
    assert not paths.sync.pid.exists() and not any((paths.work).iterdir())
    daemons = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, b"orchestrator.sync.daemon",
                                                                               str(paths.root).encode())]
    assert daemons == []
    # And `e2e files` lists the run directory live, under the names its results will have, and downloads
    live = json.loads(e2e(engine, "files", job_id, "--json").stdout)
    names = {f["path"] for f in live["files"]}
    assert live["live"] and {"runs/run-001/params.txt", "runs/run-001/out dir/step 02.txt"} <= names
    assert not any(n.endswith("wrapper.sh") for n in names)
    e2e(engine, "download", job_id, "runs/run-001/out dir/step 02.txt", "--to", str(tmp_path / "dl"))
    assert (tmp_path / "dl" / "step 02.txt").read_text() == "value=1\n"
    # When it is terminated, its results hold the run, and no sync state was ever reported
    client.terminate(job_id)
    assert engine.wait_job_terminal(job_id, timeout=120).state is JobState.TERMINATED
    stored = {f["path"] for f in results_store(engine.settings.root).manifest(job_id)["files"]}
    assert "runs/run-001/out dir/step 02.txt" in stored
    assert not any(e.kind is EventKind.SYNC_STATE for e in client.events(job_id))


def _cmdline_has(pid: str, *parts: bytes) -> bool:
    try:
        line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return all(part in line for part in parts)


def e2e(engine, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "E2E_HOME": str(engine.settings.root), "E2E_REDIS_URL": engine.settings.redis_url}
    proc = subprocess.run([E2E, *args], env=env, capture_output=True, text=True, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"e2e {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
