"""The per-job sync process: watches every run directory and the work folder, and syncs on each change.

Started detached on the head node by the sync service (`python -m orchestrator.sync.daemon --job-dir DIR`).
inotify (watchdog) wakes it within milliseconds of a write; a rescan every few seconds is the safety net
(inotify misses files written into a new folder before its watch exists). It talks to nobody: events go to
.sync/events.jsonl, which the service forwards to the job's event stream. It stops when .sync/stop appears:
a final pass takes every file as it is, then .sync/done is written and the process exits.
With --node (an ssh node with its own disk) each run directory on the node is first mirrored into the
engine's runs/<run> by listing it over ssh every --poll seconds (orchestrator/sync/nodelink.py).
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
import warnings
from pathlib import Path

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from orchestrator.model.errors import BackendError
from orchestrator.model.paths import JobPaths
from orchestrator.model.states import SyncState
from orchestrator.sync.engine import SyncPair
from orchestrator.sync.nodelink import NodeLink
from orchestrator.sync.tree import TEMP_MARK, LocalSide

log = logging.getLogger("orchestrator.sync")

RESCAN = 3.0        # seconds between safety-net rescans when inotify reports nothing
DEBOUNCE = 0.03     # a burst of writes becomes one pass
MIN_GAP = 0.1       # seconds between passes at the most busy
FINAL_PASSES = 5    # the final sync repeats until nothing moves (a conflict copy needs a second pass)
STATS_EVERY = 5.0   # seconds between sync.stats events (totals of the passes in between)
POLL = 0.15         # seconds between listings of a node's run directories (no inotify there)
ORPHAN_AFTER = 120.0  # no heartbeat from the engine for this long: leave (the service restarts us later)


class _Changes(FileSystemEventHandler):
    """Collects the folders inotify reports changes in (our own temp files excepted) and wakes the loop."""

    def __init__(self) -> None:
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._folders: set[str] = set()

    def on_any_event(self, event) -> None:
        paths = [os.fsdecode(event.src_path)]
        if getattr(event, "dest_path", ""):
            paths.append(os.fsdecode(event.dest_path))
        folders = set()
        for path in paths:
            if TEMP_MARK in os.path.basename(path):
                continue
            folders.add(os.path.dirname(path))
            if event.is_directory:
                folders.add(path)
        if folders:
            with self._lock:
                self._folders |= folders
            self.wake.set()

    def take(self) -> set[str]:
        with self._lock:
            folders, self._folders = self._folders, set()
        self.wake.clear()
        return folders


class JobSync:
    """Every run of one job paired with its work subfolder; events appended as JSON lines."""

    def __init__(self, job_dir: Path, quiet: float = 0.25, max_defer: float = 2.0, node=None) -> None:
        self.paths = JobPaths(job_dir)
        self.node = node                # a NodeLink when the runs execute on a node with its own disk
        self.mirrors: dict[str, SyncPair] = {}   # node run dir <-> the engine's runs/<run>, per run
        self.sp = self.paths.sync
        self.quiet, self.max_defer = quiet, max_defer
        self.pairs: dict[str, SyncPair] = {}
        self.seen: set[str] = set()     # runs listed whole at least once by this process
        self._events = open(self.sp.events, "a", encoding="utf-8")
        self._totals = {"files": 0, "bytes": 0, "deleted": 0, "conflicts": 0, "passes": 0}
        self._lags: list[float] = []
        self._stats_at = time.monotonic()

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
            if self.node is not None and run_id not in self.mirrors:
                self.mirrors[run_id] = self.node.mirror(run_id, self.paths.run(run_id).root,
                                                        self.sp.root / f"{run_id}.node.state.json", self.emit,
                                                        quiet=self.quiet, max_defer=self.max_defer)

    def sync_node(self, final: bool = False) -> set[str]:
        """One pass of every run's node mirror (one listing over ssh each); the runs whose copy changed."""
        self._discover()
        changed = set()
        for run_id, mirror in self.mirrors.items():
            try:
                result = mirror.sync_once(final=final)
            except BackendError as exc:  # not staged yet, node briefly unreachable: the next pass retries
                log.info("node pass of %s skipped: %s", run_id, exc)
                continue
            if result.files or result.deleted or result.conflicts:
                changed.add(run_id)
        return changed

    def dirty_by_run(self, folders: set[str]) -> dict[str, set[str] | None]:
        """Changed absolute folders -> per run, the changed folders relative to it (None: list it whole)."""
        by_run: dict[str, set[str] | None] = {}
        for base in (str(self.paths.runs), str(self.paths.work)):
            for folder in folders:
                if folder != base and not folder.startswith(base + "/"):
                    continue
                run_id, _, rel = folder[len(base) + 1:].partition("/")
                if not run_id:  # runs/ or work/ itself: a run appeared or went
                    by_run.update(dict.fromkeys(self.pairs, None))
                elif by_run.get(run_id, set()) is not None:
                    by_run.setdefault(run_id, set()).add(rel)
        return by_run

    def sync_all(self, final: bool = False,
                 dirty: dict[str, set[str] | None] | None = None) -> tuple[int, float | None]:
        """One pass over every run (or, with `dirty`, over the changed folders of the runs that changed);
        (files and deletions moved, earliest time a deferred file is due)."""
        self._discover()
        moved, due = 0, None
        for run_id, pair in self.pairs.items():
            if dirty is None or run_id not in self.seen:
                result = pair.sync_once(final=final)
                self.seen.add(run_id)
            elif run_id in dirty or pair.has_pending:
                result = pair.sync_once(final=final, dirty=dirty.get(run_id, set()))  # None: list it whole
            else:
                continue
            moved += result.files + result.deleted + result.conflicts
            if result.due is not None:
                due = result.due if due is None else min(due, result.due)
            for name in ("files", "bytes", "deleted", "conflicts"):
                self._totals[name] += getattr(result, name)
            self._lags += [c["lag"] for c in result.changes if "lag" in c]
        self._totals["passes"] += 1
        if final or time.monotonic() - self._stats_at >= STATS_EVERY:
            self.flush_stats()
        return moved, due

    def flush_stats(self) -> None:
        """One sync.stats event for the passes since the last: totals, and the write-to-visible lag."""
        self._stats_at = time.monotonic()
        if not (self._totals["files"] or self._totals["deleted"] or self._totals["conflicts"]):
            return
        lags = sorted(self._lags)
        self.emit("sync.stats", {**self._totals, "lag_p50": round(lags[len(lags) // 2], 3) if lags else None,
                                 "lag_max": round(lags[-1], 3) if lags else None})
        self._totals = dict.fromkeys(self._totals, 0)
        self._lags = []


def run(job_dir: Path, rescan: float = RESCAN, orphan_after: float = ORPHAN_AFTER, node=None,
        poll: float = POLL) -> int:
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
    job = JobSync(job_dir, node=node)
    changes = _Changes()
    observer = Observer()
    for folder in (paths.runs, paths.work):
        observer.schedule(changes, str(folder), recursive=True)
    observer.start()
    job.emit("sync.state", {"state": SyncState.STARTED.value, "pid": os.getpid()})
    try:
        due, full_at, last_pass = None, 0.0, 0.0
        while not _asked_to_stop(sp.stop_request):
            if not sp.root.is_dir():
                log.warning("%s vanished: the job is gone; leaving", sp.root)
                return 0
            if _silent_for(sp.heartbeat) > orphan_after:
                log.warning("no heartbeat from the engine for %.0fs; leaving", orphan_after)
                job.emit("sync.state", {"state": SyncState.PAUSED.value,
                                        "message": "the engine stopped looking after this job"})
                return 0
            timeout = rescan if due is None else max(0.0, min(rescan, due - time.time()))
            if node is not None:  # no inotify on the node: its run directories are listed every `poll`
                timeout = min(timeout, max(0.0, last_pass + poll - time.monotonic()))
            if changes.wake.wait(timeout):
                # A burst of writes becomes one pass, and a solver writing all the time gets a pass at most
                # every MIN_GAP seconds rather than one per write.
                time.sleep(max(DEBOUNCE, last_pass + MIN_GAP - time.monotonic()))
            folders = changes.take()
            last_pass = time.monotonic()
            from_node = job.sync_node() if node is not None else set()
            if last_pass - full_at >= rescan:
                full_at = last_pass
                _, due = job.sync_all()
            else:
                dirty = job.dirty_by_run(folders)
                dirty.update(dict.fromkeys(from_node))  # just written here: list those runs whole now
                _, due = job.sync_all(dirty=dirty)
        for _ in range(FINAL_PASSES):
            moved = len(job.sync_node(final=True)) if node is not None else 0
            moved += job.sync_all(final=True)[0]
            if not moved:
                break
        job.emit("sync.state", {"state": SyncState.STOPPED.value})
        sp.done.write_text(str(time.time()))
        return 0
    finally:
        observer.stop()
        observer.join(5)


def _silent_for(heartbeat: Path) -> float:
    try:
        return time.time() - heartbeat.stat().st_mtime
    except FileNotFoundError:
        return 0.0  # an older service that writes none: never orphaned


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
    parser.add_argument("--orphan-after", type=float, default=ORPHAN_AFTER,
                        help="leave after this many seconds without a heartbeat from the engine")
    parser.add_argument("--node", help="the ssh node (without shared storage) the job's runs execute on")
    parser.add_argument("--inventory", type=Path, help="the ssh backend's inventory (with --node)")
    parser.add_argument("--poll", type=float, default=POLL, help="seconds between listings of the node's runs")
    args = parser.parse_args(argv)
    if args.node and not args.inventory:
        parser.error("--node needs --inventory")
    # watchdog 7 warns on every re-added watch of a recreated folder (harmless; it would flood the log)
    warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"watchdog\.")
    job_dir = args.job_dir.resolve()
    (job_dir / ".sync").mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=JobPaths(job_dir).sync.log, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        node = NodeLink.open(args.inventory, args.node) if args.node else None
        try:
            return run(job_dir, args.rescan, args.orphan_after, node, args.poll)
        finally:
            if node is not None:
                node.close()
    except Exception:  # logged with its traceback for the operator; the service starts a new process
        log.exception("sync daemon failed")
        return 1


if __name__ == "__main__":
    sys.exit(main())
