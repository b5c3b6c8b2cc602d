"""The host's run watcher: follows the runs this host started, their folder through inotify and their wrapper
through a pidfd, and rings the engine the moment one writes (its log, its monitor files) or ends, so no pass
over every job has to poll them. One watcher per host holds the host's lease; another waits to take over.

It rings, it never judges: a ring is a request to look at one job (the `e2e.observe` task), and the engine's
one observation step reads the facts as before. The runs hold no credential of any kind: the watcher is an
engine thread beside the worker, and a run's only part in it is to write its files and exit.
"""

from __future__ import annotations

import logging
import os
import resource
import select
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from inotify_simple import INotify, flags

from orchestrator.cluster import get_backend
from orchestrator.model.paths import JobPaths
from orchestrator.model.settings import Settings
from orchestrator.model.states import RUN_ENDED, JobState
from orchestrator.store.jobs import JobStore

log = logging.getLogger(__name__)

POLL = 0.2         # seconds between reads of the announcements: how late a new run may be followed
LEASE = 6.0        # the host's watcher lease, renewed every LEASE / 3
PRUNE = 30.0       # seconds between drops of followed runs whose job has ended meanwhile
MASK = flags.MODIFY | flags.CLOSE_WRITE | flags.MOVED_TO | flags.CREATE


@dataclass
class Followed:
    job: str
    run: str
    attempt: int
    wd: int | None
    pidfd: int | None


class RunWatcher:
    """Follows this host's runs and calls `ring(job_id)` when one of them moves."""

    def __init__(self, store: JobStore, settings: Settings, ring: Callable[[str], None],
                 host: str | None = None) -> None:
        self.store, self.settings, self.ring = store, settings, ring
        self.host = host or socket.gethostname()
        self.holder = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.followed: dict[str, Followed] = {}         # job id -> its followed run
        self._by_wd: dict[int, str] = {}
        self._by_pidfd: dict[int, str] = {}
        self._pending: dict[str, float] = {}             # job id -> when its coalesced ring is due
        self._rung: dict[str, float] = {}                # job id -> its last ring
        self._inotify: INotify | None = None
        self._epoll: select.epoll | None = None
        self._cursor = "0-0"

    # -- the loop
    def run(self, stop: threading.Event) -> None:
        holding = False
        renewed = prune = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now - renewed >= LEASE / 3:
                    renewed = now
                    held = self._try(lambda: self.store.observation.hold_watcher(self.host, self.holder, LEASE))
                    if held and not holding:
                        self._start()
                    elif not held and holding:
                        self._close()  # another watcher took the host (this one stalled past its lease)
                    holding = bool(held)
                if not holding:
                    stop.wait(LEASE / 3)
                    continue
                self._try(self._read_announcements)
                if now - prune >= PRUNE:
                    prune = now
                    self._try(self._prune)
                self.wait_once(POLL)
        finally:
            self._close()
            self._try(lambda: self.store.observation.drop_watcher(self.host, self.holder))

    def _try(self, step: Callable[[], object]) -> object:
        try:
            return step()
        except Exception:  # noqa: BLE001 - Redis away or a bad entry: the safety net covers, the loop goes on
            log.exception("run watcher step failed")
            return None

    def _start(self) -> None:
        """Took the host: follow every run this host's backends have running now, then every new one."""
        _raise_fd_limit()
        self._inotify = INotify()
        self._epoll = select.epoll()
        self._epoll.register(self._inotify.fileno(), select.EPOLLIN)
        self._cursor = self.store.observation.newest_announcement()
        for job_id in self.store.active_jobs():
            self._try(lambda job_id=job_id: self._follow_current(job_id))

    def _close(self) -> None:
        for job_id in list(self.followed):
            self._unfollow(job_id)
        for handle in (self._epoll, self._inotify):
            if handle is not None:
                handle.close()
        self._epoll = self._inotify = None

    def wait_once(self, timeout: float) -> None:
        """Wait up to `timeout` for writes and ends, ring for them, and send the coalesced rings now due."""
        assert self._epoll is not None and self._inotify is not None
        due = min(self._pending.values(), default=None)
        if due is not None:
            timeout = max(0.0, min(timeout, due - time.monotonic()))
        for fd, _ in self._epoll.poll(timeout):
            if fd == self._inotify.fileno():
                for event in self._inotify.read(timeout=0):
                    job_id = self._by_wd.get(event.wd)
                    if event.mask & flags.IGNORED:
                        self._by_wd.pop(event.wd, None)
                    elif job_id is not None:
                        self._soon(job_id)
            elif (job_id := self._by_pidfd.get(fd)) is not None:
                self._unfollow(job_id)   # the wrapper has exited: its exit code is written, or it was killed
                self._ring(job_id)
        now = time.monotonic()
        for job_id, at in list(self._pending.items()):
            if at <= now:
                del self._pending[job_id]
                self._ring(job_id)

    def _soon(self, job_id: str) -> None:
        if job_id in self._pending:
            return
        # A run that writes all the time rings at most once a reconcile interval (as often as the old pass
        # looked at it); its end rings at once.
        self._pending[job_id] = max(time.monotonic(), self._rung.get(job_id, 0.0) + self.settings.reconcile_interval)

    def _ring(self, job_id: str) -> None:
        self._rung[job_id] = time.monotonic()
        self._pending.pop(job_id, None)
        try:
            self.ring(job_id)
        except Exception:  # noqa: BLE001 - a lost ring costs one safety-net interval, never a job
            log.warning("ringing for %s failed", job_id)

    # -- following runs
    def _read_announcements(self) -> None:
        for entry_id, fields in self.store.observation.announcements(self._cursor):
            self._cursor = entry_id
            if fields.get("host") == self.host:
                self.follow(fields["job"], fields["run"], int(fields["attempt"]), int(fields["pid"]),
                            Path(fields["root"]))

    def _follow_current(self, job_id: str) -> None:
        job = self.store.get_job(job_id)
        if job.state is not JobState.UP or not get_backend(job.backend, self.settings).watchable_here:
            return
        run = self.store.get_run(job_id, job.current_run)
        if run.pid and run.state not in RUN_ENDED:
            self.follow(job_id, run.id, run.attempt or 1, run.pid,
                        JobPaths.for_job(self.settings.root, job_id).run(run.id).root)

    def follow(self, job_id: str, run_id: str, attempt: int, pid: int, root: Path) -> None:
        """Follow one run: its folder's writes, and its wrapper's end (a run already over rings at once)."""
        known = self.followed.get(job_id)
        if known is not None and (known.run, known.attempt) >= (run_id, attempt):
            return
        self._unfollow(job_id)
        assert self._epoll is not None and self._inotify is not None
        pidfd = _wrapper_pidfd(pid, root)
        if pidfd is None:
            self._ring(job_id)   # its wrapper has already exited (or is not this host's): look now
            return
        try:
            wd: int | None = self._inotify.add_watch(str(root), MASK)
        except OSError as exc:  # gone already, or the watch limit: its end still rings through the pidfd
            log.warning("cannot watch %s: %s", root, exc)
            wd = None
        self.followed[job_id] = Followed(job_id, run_id, attempt, wd, pidfd)
        self._epoll.register(pidfd, select.EPOLLIN)
        self._by_pidfd[pidfd] = job_id
        if wd is not None:
            self._by_wd[wd] = job_id

    def _unfollow(self, job_id: str) -> None:
        known = self.followed.pop(job_id, None)
        if known is None:
            return
        if known.pidfd is not None:
            self._by_pidfd.pop(known.pidfd, None)
            if self._epoll is not None:
                self._epoll.unregister(known.pidfd)
            os.close(known.pidfd)
        # A watch id may be the same for two runs in one folder (a restart): drop it only if it is still ours.
        if known.wd is not None and self._by_wd.get(known.wd) == job_id:
            del self._by_wd[known.wd]
            if self._inotify is not None:
                try:
                    self._inotify.rm_watch(known.wd)
                except OSError:
                    pass   # the folder is gone: the kernel dropped the watch itself

    def _prune(self) -> None:
        active = set(self.store.active_jobs())
        for job_id in [j for j in self.followed if j not in active]:
            self._unfollow(job_id)
        for job_id in [j for j in self._rung if j not in self.followed and j not in active]:
            del self._rung[job_id]


def _wrapper_pidfd(pid: int, root: Path) -> int | None:
    """A pidfd of the run's wrapper, or None when that process is gone or is not the run's: a pid is checked
    by its working folder (the wrapper's is the run folder), so a recycled pid is never mistaken for it."""
    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None
    try:
        if os.path.realpath(f"/proc/{pid}/cwd") != os.path.realpath(root):
            os.close(pidfd)
            return None
    except OSError:
        os.close(pidfd)
        return None
    return pidfd


def _raise_fd_limit() -> None:
    """A pidfd per followed run: take the hard limit of open files (thousands of runs on one host)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
