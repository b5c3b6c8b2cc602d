"""The per-job sync process: watches every run directory and the work folder, and syncs on each change.

Started detached on the head node by the sync service (`python -m orchestrator.sync.daemon --job-dir DIR`).
inotify (watchdog) wakes it within milliseconds of a write; a rescan every few seconds is the safety net
(inotify misses files written into a new folder before its watch exists). It talks to nobody: events go to
.sync/events.jsonl, which the service forwards to the job's event stream. It stops when .sync/stop appears:
a final pass takes every file as it is, then .sync/done is written and the process exits.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from ..paths import JobPaths
from .engine import SyncPair
from .tree import TEMP_MARK, LocalSide

log = logging.getLogger("orchestrator.sync")

RESCAN = 3.0        # seconds between safety-net rescans when inotify reports nothing
DEBOUNCE = 0.03     # a burst of writes becomes one pass
FINAL_PASSES = 5    # the final sync repeats until nothing moves (a conflict copy needs a second pass)


class _Wake(FileSystemEventHandler):
    """Any change under the watched folders wakes the loop (our own temp files excepted)."""

    def __init__(self, wake: threading.Event) -> None:
        self.wake = wake

    def on_any_event(self, event) -> None:
        if TEMP_MARK not in os.path.basename(str(event.src_path)):
            self.wake.set()


class JobSync:
    """Every run of one job paired with its work subfolder; events appended as JSON lines."""

    def __init__(self, job_dir: Path, quiet: float = 0.25, max_defer: float = 2.0) -> None:
        self.paths = JobPaths(job_dir)
        self.sp = self.paths.sync
        self.quiet, self.max_defer = quiet, max_defer
        self.pairs: dict[str, SyncPair] = {}
        self._events = open(self.sp.events, "a", encoding="utf-8")

    def emit(self, kind: str, data: dict) -> None:
        line = json.dumps({"kind": kind, "ts": time.time(), "data": data}, ensure_ascii=True)
        self._events.write(line + "\n")
        self._events.flush()

    def _discover(self) -> None:
        try:
            names = sorted(d.name for d in os.scandir(self.paths.runs) if d.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            names = []
        for run_id in names:
            if run_id not in self.pairs:
                self.pairs[run_id] = SyncPair(
                    run_id, LocalSide(self.paths.run(run_id).root), LocalSide(self.paths.work_of(run_id)),
                    self.sp.state(run_id), self.emit, quiet=self.quiet, max_defer=self.max_defer)

    def sync_all(self, final: bool = False) -> tuple[int, float | None]:
        """One pass over every run; (files and deletions moved, earliest time a deferred file is due)."""
        self._discover()
        moved, due = 0, None
        for pair in self.pairs.values():
            result = pair.sync_once(final=final)
            moved += result.files + result.deleted + result.conflicts
            if result.due is not None:
                due = result.due if due is None else min(due, result.due)
        return moved, due


def run(job_dir: Path, rescan: float = RESCAN) -> int:
    """The daemon's life: lock, watch, sync until asked to stop, final pass, done marker."""
    paths = JobPaths(job_dir)
    sp = paths.sync
    sp.root.mkdir(parents=True, exist_ok=True)
    lock = open(sp.lock, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another sync process holds %s; leaving", sp.lock)
        return 0
    (sp.root / "pid.tmp").write_text(str(os.getpid()))
    os.replace(sp.root / "pid.tmp", sp.pid)
    paths.work.mkdir(parents=True, exist_ok=True)
    paths.runs.mkdir(parents=True, exist_ok=True)
    job = JobSync(job_dir)
    wake = threading.Event()
    observer = Observer()
    for folder in (paths.runs, paths.work):
        observer.schedule(_Wake(wake), str(folder), recursive=True)
    observer.start()
    job.emit("sync.state", {"state": "started", "pid": os.getpid()})
    try:
        due = None
        while not _asked_to_stop(sp.stop_request):
            if not sp.root.is_dir():
                log.warning("%s vanished: the job is gone; leaving", sp.root)
                return 0
            timeout = rescan if due is None else max(0.0, min(rescan, due - time.time()))
            if wake.wait(timeout):
                time.sleep(DEBOUNCE)
            wake.clear()
            _, due = job.sync_all()
        for _ in range(FINAL_PASSES):
            moved, _ = job.sync_all(final=True)
            if not moved:
                break
        job.emit("sync.state", {"state": "stopped"})
        sp.done.write_text(str(time.time()))
        return 0
    finally:
        observer.stop()
        observer.join(5)


def _asked_to_stop(marker: Path) -> bool:
    """The service writes a timestamp to ask for a stop (and empties the file on a fresh start)."""
    try:
        return bool(marker.read_bytes().strip())
    except FileNotFoundError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.sync.daemon", description=__doc__.splitlines()[0])
    parser.add_argument("--job-dir", type=Path, required=True, help="the job directory ($E2E_HOME/jobs/<id>)")
    parser.add_argument("--rescan", type=float, default=RESCAN, help="seconds between safety-net rescans")
    args = parser.parse_args(argv)
    job_dir = args.job_dir.resolve()
    (job_dir / ".sync").mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=JobPaths(job_dir).sync.log, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        return run(job_dir, args.rescan)
    except Exception:  # noqa: BLE001 - logged with its traceback for the operator; the service restarts us
        log.exception("sync daemon failed")
        return 1


if __name__ == "__main__":
    sys.exit(main())
