"""The results disk fills up during terminate: the failure is an event naming the cause, the run directory is
left intact, nothing half-stored is kept, and once space is freed the same termination completes collection."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from orchestrator.cluster.local import tagged_processes
from orchestrator.model.events import EventKind
from orchestrator.model.states import JobState, RunState
from tests.conftest import require
from tests.integration.conftest import Engine, make_settings, wait_for

from .conftest import Tally

pytestmark = pytest.mark.integration

OUTPUT_BYTES = 3 << 20   # the run's output: three times what the results disk holds


def _mount_small(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
                          capture_output=True, text=True, timeout=30)
    require(done.returncode == 0, f"a size-limited tmpfs mount (root with CAP_SYS_ADMIN): {done.stderr.strip()}")


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_results_disk_full_during_terminate_fails_clearly_then_completes(redis_url, tmp_path):
    require(os.geteuid() == 0 and shutil.which("mount") is not None, "root and mount (a size-limited tmpfs)")
    url = f"{redis_url}/3"
    redis.Redis.from_url(url).flushdb()
    home = tmp_path / "home"
    results = home / "results"
    _mount_small(results, "1m")
    engine = Engine(make_settings(home, url))
    client = engine.client
    tally = Tally(jobs=1, affected=1)
    try:
        # Given a job whose run wrote more than the results disk can hold
        job_id = client.submit_data({"name": "bigout", "desktop": {"enabled": False}, "solver": {
            "name": "command", "command": ["bash", "-c", f"head -c {OUTPUT_BYTES} /dev/urandom > big.bin; "
                                                         "echo done > output.txt"]}})
        doc = engine.wait_run(job_id, timeout=60)
        assert doc.runs_detail[0].state is RunState.COMPLETED
        run_dir = home / "jobs" / job_id / "runs" / "run-001"
        before = _digests(run_dir)
        # When it is terminated
        client.terminate(job_id)
        # Then the failure is an error event that names the cause, and the job stays TERMINATING
        error = wait_for(lambda: next((e for e in client.events(job_id) if e.kind is EventKind.ERROR
                                       and e.data.get("step") == "collect"), None), 60, "a collect error event")
        assert "No space left on device" in error.data["message"], error.data
        status = client.status(job_id)
        assert status.state is JobState.TERMINATING and status.collect_error == error.data["message"]
        assert sum(e.kind is EventKind.ERROR for e in client.events(job_id)) == 1, "said once, not every pass"
        # ... the run directory is intact, no half-stored results are kept, and the solver is gone
        assert _digests(run_dir) == before
        assert not (results / job_id / "manifest.json").exists()
        # (each pass tries the collection again, and removes its staging when the disk refuses: between two
        # attempts nothing is there; a staging left behind would stay, and the folder never be empty)
        wait_for(lambda: list(results.iterdir()) == [], 10, "no staging left behind on the full disk", poll=0.01)
        tally.orphans = len(tagged_processes(f"{job_id}/run-001"))
        # When space is freed, the same termination completes collection on a later pass
        subprocess.run(["mount", "-o", "remount,size=64m", str(results)], check=True, timeout=30)
        doc = engine.wait_job_terminal(job_id, timeout=60)
        assert doc.state is JobState.TERMINATED
        stored = _digests(results / job_id / "runs" / "run-001")
        tally.files_lost = sum(1 for rel, digest in before.items()
                               if Path(rel).name != "wrapper.sh" and stored.get(rel) != digest)
        tally.recovered = 1
        tally.record("fault: results disk full", "ENOSPC in collect: one error event, run dir intact, "
                     "stored whole once space was freed", event=error.data["message"])
        tally.assert_clean()
    finally:
        engine.close()
        subprocess.run(["umount", "-l", str(results)], capture_output=True, timeout=30)
