"""One sync pass between a run directory and its work subfolder: what changed on which side, and the rule.

The state remembers, per path, both sides' signature (kind, size, mtime, link target) after the last sync.
A side changed when its signature differs from that. Then:
- changed on one side only: the change (new file, new content, deletion, new folder, link) goes across;
- changed on both: same content is simply recorded; different content is a conflict: the run directory's
  version keeps the name (it is what the solver uses), the desktop's is kept beside it as
  `<name>.conflict-desktop-<time><ext>` (and reaches the run directory too), with a sync.conflict event;
  a deletion against a modification: the modification wins.
A file younger than `quiet` seconds is left for a later pass (it is probably still being written), unless it
keeps changing for longer than `max_defer` (a growing log): then a consistent snapshot goes across.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from orchestrator.model.errors import UserError
from orchestrator.sync.confine import link_stays_inside
from orchestrator.sync.copy import Copied, LocalCopier, RsyncCopier

if TYPE_CHECKING:
    from orchestrator.sync.remote import RemoteCopier
from orchestrator.sync.tree import DIR, Entry, LocalSide, Side, temp_name

log = logging.getLogger(__name__)

RUN, WORK = "run", "work"
MAX_FILE_EVENTS = 20    # per pass; beyond that one summary event (a restart can touch thousands of files)
PARALLEL_MIN = 16        # copies in one pass from which they run in threads
COPY_THREADS = 4
MAX_DIRTY = 256          # more changed folders than this in one pass: list both trees whole instead
FILE_EVENT_EVERY = 60.0  # seconds between sync.file events for the same, still changing file

Emit = Callable[[str, dict], None]


@dataclass(frozen=True)
class _Copy:
    """A file copy decided on during a pass, done after the decisions (several at once)."""

    rel: str
    src: str
    dst: str
    e_src: Entry
    e_dst: Entry | None
    dst_is_ours: bool
    force: bool


@dataclass
class PassResult:
    files: int = 0
    bytes: int = 0
    deleted: int = 0
    conflicts: int = 0
    lag_max: float = 0.0
    due: float | None = None          # when a deferred file should be looked at again (time.time())
    changes: list[dict] = field(default_factory=list)


class SyncPair:
    """Keeps one run directory and its work subfolder in step, pass by pass; state persisted to a file."""

    def __init__(self, label: str, run: Side, work: LocalSide, state_file: Path, emit: Emit,
                 quiet: float = 0.25, max_defer: float = 2.0,
                 copier: LocalCopier | RsyncCopier | RemoteCopier | None = None) -> None:
        self.label, self.sides, self.state_file, self.emit = label, {RUN: run, WORK: work}, state_file, emit
        self.quiet, self.max_defer = quiet, max_defer
        self.copier = copier or LocalCopier()
        self.state: dict[str, list] = self._load()
        self._changing_since: dict[str, float] = {}
        self._warned: set[tuple[str, str]] = set()
        self._reported: dict[str, float] = {}
        self._scanned_at: float | None = None
        self._pending_dirs: set[str] = set()    # folders of files left for a later look
        self._copies: list[_Copy] = []
        self._state_changed = False
        self._changed_after = 0.0

    # -- state
    def _load(self) -> dict[str, list]:
        try:
            raw = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return {rel: [Entry(*r) if r else None, Entry(*w) if w else None] for rel, (r, w) in raw.items()}

    def _save(self) -> None:
        tmp = self.state_file.with_name(temp_name(self.state_file.name))
        tmp.write_text(json.dumps(self.state, separators=(",", ":")))
        os.replace(tmp, self.state_file)

    def _record(self, rel: str, run: Entry | None, work: Entry | None) -> None:
        if run is None and work is None:
            self.state.pop(rel, None)
        else:
            self.state[rel] = [run, work]
        self._state_changed = True
        self._changing_since.pop(rel, None)

    # -- one pass
    @property
    def has_pending(self) -> bool:
        """Files were left for a later look (still being written)."""
        return bool(self._pending_dirs)

    def sync_once(self, final: bool = False, dirty: set[str] | None = None) -> PassResult:
        """Bring both sides in step once. `final`: take files still being written as they are now.
        `dirty`: only these folders ("" = the top) changed, as inotify reported: only they are listed (plus
        new folders inside them, whole); None lists both trees whole (the periodic safety net)."""
        result = PassResult()
        now = time.time()
        # A change seen now happened after the previous scan: that bounds the lag of files whose mtime
        # was kept from elsewhere (copied inputs, `cp -p`).
        self._changed_after = self._scanned_at if self._scanned_at is not None else now
        self._scanned_at = now
        self.sides[WORK].root.mkdir(parents=True, exist_ok=True)
        if dirty is None or len(dirty) > MAX_DIRTY:
            seen = {RUN: self.sides[RUN].scan(), WORK: self.sides[WORK].scan()}
            names = set(seen[RUN]) | set(seen[WORK]) | set(self.state)
        else:
            dirs = dirty | self._pending_dirs
            known = {rel for rel, (r, w) in self.state.items() if r == DIR or w == DIR}
            seen = {side: self.sides[side].scan_dirs(dirs, known) for side in (RUN, WORK)}
            names = set(seen[RUN]) | set(seen[WORK]) | {rel for rel in self.state if rel.rpartition("/")[0] in dirs}
        self._pending_dirs = set()
        removed_dirs: list[tuple[str, str]] = []
        run_seen, work_seen, state, none = seen[RUN], seen[WORK], self.state, (None, None)
        todo = []
        for rel in names:  # most paths did not change: find the others cheaply, then handle them in order
            last = state.get(rel, none)
            run, work = run_seen.get(rel), work_seen.get(rel)
            if run != last[0] or work != last[1]:
                todo.append((rel, run, work, last))
        for rel, run, work, last in sorted(todo):
            entries = {RUN: run, WORK: work}
            changed = {RUN: run != last[0], WORK: work != last[1]}
            try:
                if changed[RUN] and changed[WORK]:
                    self._both_changed(rel, entries, now, final, result, removed_dirs)
                else:
                    src = RUN if changed[RUN] else WORK
                    self._one_changed(rel, src, entries, now, final, result, removed_dirs)
            except (OSError, UserError) as exc:
                # One bad path (permissions, a symlinked folder on the way) must not stop the others.
                self._warn(rel, f"not synced: {exc}")
        self._run_copies(now, result)
        for src, rel in sorted(removed_dirs, key=lambda item: -item[1].count("/")):
            dst = WORK if src == RUN else RUN
            if self.sides[dst].rmdir(rel):
                self._record(rel, None, None)
        if self._state_changed:
            self._save()
            self._state_changed = False
        if result.files or result.deleted or result.conflicts:
            self._report(result)
        return result

    def _one_changed(self, rel: str, src: str, entries: dict, now: float, final: bool, result: PassResult,
                     removed_dirs: list) -> None:
        dst = WORK if src == RUN else RUN
        e_src, e_dst = entries[src], entries[dst]
        if e_src is None:  # deleted on src
            if e_dst is None:
                self._record(rel, None, None)
            elif e_dst.kind == "d":
                removed_dirs.append((src, rel))
            else:
                self.sides[dst].remove(rel)
                self._record(rel, None, None)
                result.deleted += 1
                result.changes.append({"run": self.label, "path": rel, "action": "deleted", "on": dst})
            return
        self._send(rel, src, e_src, e_dst, dst_is_ours=True, now=now, final=final, result=result)

    def _both_changed(self, rel: str, entries: dict, now: float, final: bool, result: PassResult,
                      removed_dirs: list) -> None:
        run, work = entries[RUN], entries[WORK]
        if run is None and work is None:
            self._record(rel, None, None)
        elif run is None or work is None:  # deleted on one side, changed on the other: the change wins
            src = RUN if run is not None else WORK
            self._send(rel, src, entries[src], None, dst_is_ours=False, now=now, final=final, result=result)
        elif self._same(rel, run, work):
            self._record(rel, run, work)
        else:
            if not final and any(e.kind == "f" and now - e.mtime_ns / 1e9 < self.quiet for e in (run, work)):
                self._defer(rel, now, result)
                return
            saved = self._conflict_name(rel)
            self.sides[WORK].rename(rel, saved)
            result.conflicts += 1
            self.emit("sync.conflict", {"run": self.label, "path": rel, "kept": "run directory",
                                        "desktop_copy": saved})
            self._send(rel, RUN, run, None, dst_is_ours=False, now=now, final=final, result=result)

    def _same(self, rel: str, run: Entry, work: Entry) -> bool:
        """Both sides hold the same thing (the same change made twice is no conflict)."""
        if run.kind != work.kind:
            return False
        if run.kind == "f":
            return run.size == work.size and self.sides[RUN].sha256(rel) == self.sides[WORK].sha256(rel)
        return run.kind == "d" or run.target == work.target

    def _send(self, rel: str, src: str, e_src: Entry, e_dst: Entry | None, dst_is_ours: bool, now: float,
              final: bool, result: PassResult) -> None:
        dst = WORK if src == RUN else RUN
        sides = self.sides
        if e_src.kind == "d":
            if e_dst is not None and e_dst.kind != "d" and dst_is_ours:
                sides[dst].remove(rel)  # a file (or link) we put there became a folder on the other side
            sides[dst].mkdir(rel)
            self._record_pair(rel, src, e_src, sides[dst].stat(rel))
            return
        if e_src.kind == "l":
            if not link_stays_inside(sides[src].root, rel, e_src.target):
                self._warn(rel, f"symlink to {e_src.target!r} leads outside the folder: not synced")
                return
            if e_dst is not None and e_dst.kind == "d":
                self._warn(rel, "a symlink on one side is a folder on the other: not synced")
                return
            self._record_pair(rel, src, e_src, sides[dst].symlink(rel, e_src.target))
            result.files += 1
            return
        age = now - e_src.mtime_ns / 1e9
        first = self._changing_since.setdefault(rel, now)
        force = final or now - first >= self.max_defer
        if age < self.quiet and not force:
            self._defer(rel, now, result, at=e_src.mtime_ns / 1e9 + self.quiet)
            return
        if e_dst is not None and e_dst.kind == "l":
            sides[dst].remove(rel)
            e_dst = None
        self._copies.append(_Copy(rel, src, dst, e_src, e_dst, dst_is_ours, force))

    def _run_copies(self, now: float, result: PassResult) -> None:
        """The file copies this pass decided on; many at once go through a few threads (creating files is
        slow on some filesystems and the kernel does it without the GIL)."""
        copies, self._copies = self._copies, []
        if len(copies) >= PARALLEL_MIN:
            # Creating files in one folder takes the folder's lock: interleave the folders across threads.
            by_folder: dict[str, list[_Copy]] = {}
            for job in copies:
                by_folder.setdefault(job.rel.rpartition("/")[0], []).append(job)
            copies = [job for row in zip_longest(*by_folder.values()) for job in row if job is not None]
            with ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="sync-copy") as pool:
                outcomes = list(pool.map(self._copy, copies))
        else:
            outcomes = [self._copy(job) for job in copies]
        for job, outcome in zip(copies, outcomes, strict=True):
            if isinstance(outcome, Exception):
                self._warn(job.rel, f"not synced: {outcome}")
            elif outcome is None:  # still being written: look again soon
                self._defer(job.rel, now, result)
            else:
                self._copied(job, outcome, result)

    def _copy(self, job: _Copy) -> Copied | Exception | None:
        try:
            return self.copier.copy(self.sides[job.src], self.sides[job.dst], job.rel, job.e_src, job.e_dst,
                                    job.dst_is_ours, force=job.force)
        except (OSError, UserError) as exc:
            return exc

    def _copied(self, job: _Copy, copied: Copied, result: PassResult) -> None:
        rel, src, dst, e_dst = job.rel, job.src, job.dst, job.e_dst
        self._record_pair(rel, src, copied.src, copied.dst)
        if copied.superseded:  # recorded as sent: the newer write on dst differs from it, so it goes back
            self._defer(rel, time.time(), result)
            return
        result.files += 1
        result.bytes += copied.sent
        lag = max(0.0, time.time() - max(copied.src.mtime_ns / 1e9, self._changed_after))
        result.lag_max = max(result.lag_max, lag)
        result.changes.append({"run": self.label, "path": rel, "action": "appended" if copied.appended else
                               ("updated" if e_dst is not None else "added"), "to": dst,
                               "bytes": copied.sent, "size": copied.src.size, "lag": round(lag, 3)})

    def _record_pair(self, rel: str, src: str, e_src: Entry, e_dst: Entry | None) -> None:
        if src == RUN:
            self._record(rel, e_src, e_dst)
        else:
            self._record(rel, e_dst, e_src)

    def _defer(self, rel: str, now: float, result: PassResult, at: float | None = None) -> None:
        self._changing_since.setdefault(rel, now)
        self._pending_dirs.add(rel.rpartition("/")[0])
        at = max(at or now + self.quiet, now + 0.02)
        result.due = at if result.due is None else min(result.due, at)

    def _conflict_name(self, rel: str) -> str:
        pure = PurePosixPath(rel)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        suffix = pure.suffix if len(pure.suffix) <= 12 else ""
        stem = pure.name[: len(pure.name) - len(suffix)] if suffix else pure.name
        for n in range(1000):
            extra = f"-{n}" if n else ""
            name = str(pure.with_name(f"{stem}.conflict-desktop-{stamp}{extra}{suffix}"))
            if self.sides[WORK].stat(name) is None and self.sides[RUN].stat(name) is None:
                return name
        raise UserError(f"too many conflict copies of {rel!r}")

    def _warn(self, rel: str, message: str) -> None:
        if (rel, message) in self._warned:
            return
        self._warned.add((rel, message))
        self.emit("sync.skip", {"run": self.label, "path": rel, "message": message})

    def _report(self, result: PassResult) -> None:
        """sync.file events: every addition and deletion; a file that keeps changing (a log) at most once per
        FILE_EVENT_EVERY seconds, so a long run does not flood the job's event stream. Totals and lag go
        out as sync.stats from the daemon."""
        now = time.time()
        shown = []
        for change in result.changes:
            if change["action"] in ("updated", "appended"):
                if now - self._reported.get(change["path"], 0.0) < FILE_EVENT_EVERY:
                    continue
                self._reported[change["path"]] = now
            shown.append(change)
        if len(shown) <= MAX_FILE_EVENTS:
            for change in shown:
                self.emit("sync.file", change)
        else:
            self.emit("sync.file", {"run": self.label, "action": "many", "count": len(shown),
                                    "paths": [c["path"] for c in shown[:MAX_FILE_EVENTS]]})
