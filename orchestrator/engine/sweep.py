"""Observation without a serial pass: a rung job is looked at at once, and the safety net sweeps the due jobs
in slices that any worker claims, each job looked at under its own lease and then given its next look.

When is a job due again? Soon (the reconcile interval) while something may change without a sign the engine
would see: a queued or launching job, a stopping run, a desktop to supervise, a run on another host. A running
job whose run the host's watcher follows (engine/watcher.py: its log writes and its wrapper's end ring the
engine) is due only every safety interval (longer with thousands of jobs: SAFETY_SHARE), or sooner when one of
its limits warns or strikes.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from typing import TYPE_CHECKING, Callable

from orchestrator.cluster import get_backend
from orchestrator.engine.limits import next_limit_moment
from orchestrator.engine.node_health import kill_leftovers
from orchestrator.model.errors import E2EError
from orchestrator.model.records import Job
from orchestrator.model.states import JobState, RunState

if TYPE_CHECKING:
    from orchestrator.engine.lifecycle import Lifecycle

log = logging.getLogger(__name__)

SLICE = 32             # jobs one sweep task claims; a full slice hands the rest to another worker at once
CLAIM_LEASE = 30.0     # a claimed job that a dead worker never looked at is due again this much later
# One look at one job holds the job's lease at most this long (or 5 reconcile intervals): a worker killed
# mid-look leaves the job unlooked-at this long. A look that takes longer (a slow node) may meet a second
# one: both are safe (every transition is a compare-and-set), the lease only keeps them from doubling work.
LOOK_LEASE = 10.0
WATCHER_CHECK = 2.0    # seconds a "the watcher is alive" answer (or the count of active jobs) is trusted
# The safety net's looks at followed runs get this many seconds of interval per active job, when that is longer
# than E2E_SAFETY_INTERVAL: the net's cost stays a fixed share of a worker (a look costs a few ms: at 5 ms,
# 17% of one core) however many jobs run, and its period grows with them (1,000 jobs: 30 s; 10,000: 300 s).
# What it is there for (a ring lost) is rare; every real end and write rings at once.
SAFETY_SHARE = 0.03


class Sweeper:
    """Looks at jobs: the ones the safety net finds due, or one the watcher rang for."""

    def __init__(self, lifecycle: Lifecycle, host: str | None = None) -> None:
        self.lifecycle = lifecycle
        self.store = lifecycle.store
        self.settings = lifecycle.settings
        self.host = host or socket.gethostname()
        self._watcher: tuple[float, bool] = (0.0, False)
        self._active: tuple[float, int] = (0.0, 0)

    def sweep(self, on_more: Callable[[], None] | None = None) -> int:
        """Claim one slice of the due jobs and look at each; `on_more` is called first when the slice came
        full (more are due: another worker should take the next slice meanwhile). How many were looked at."""
        ids = self.store.observation.claim_due(SLICE, CLAIM_LEASE)
        if len(ids) == SLICE and on_more is not None:
            on_more()
        return self.look_at(ids)

    def look_all(self) -> int:
        """Every active job once, in this process (tools and benches: one full pass, timed)."""
        return self.look_at(self.store.active_jobs())

    def look_at(self, job_ids: list[str]) -> int:
        if not job_ids:
            return 0
        head = self.store.queue_head()
        waiting = self.store.queued_among(job_ids)   # (not the whole queue: thousands may wait in it)
        looks: dict[str, float] = {}
        looked = 0
        for job_id in job_ids:
            if job_id in waiting and job_id != head:
                # strictly first-in, first-out: only the head of the queue may take nodes. The others wait for
                # the kick of the job before them (or, should it be lost, the tick's look at the head): looking at
                # thousands of them every interval would take the workers from the provisions they wait for.
                looks[job_id] = time.time() + self._safety_interval() * random.uniform(0.9, 1.1)
                continue
            when = self._look(job_id)
            if when is not None:
                looks[job_id] = when
                looked += 1
        self.store.observation.schedule(looks)
        return looked

    def look_now(self, job_id: str) -> bool:
        """One look at a job the watcher rang for; False when another worker is looking at it right now
        (the caller asks again shortly: that look may have read the files before what rang)."""
        when = self._look(job_id)
        if when is None:
            return False
        self.store.observation.schedule({job_id: when})
        return True

    def _look(self, job_id: str) -> float | None:
        """Observe one job under its lease; when it is due again (None: its lease was taken)."""
        lease = self.store.observation.lease(job_id, max(LOOK_LEASE, 5 * self.settings.reconcile_interval))
        if not lease.acquire():
            return None
        job: Job | None = None
        try:
            job = self.lifecycle.reconcile_job(job_id)
        except E2EError as exc:
            log.warning("reconcile %s: %s", job_id, exc.message)
        except Exception:  # noqa: BLE001 - one bad job must not stop the others; logged with its traceback
            log.exception("reconcile %s failed", job_id)
        finally:
            try:
                lease.release()
            except Exception:  # noqa: BLE001 - the lease expired under a very long look: harmless
                log.warning("observation lease of %s expired before release", job_id)
        return self.next_look(job)

    def next_look(self, job: Job | None) -> float:
        now = time.time()
        soon = now + self.settings.reconcile_interval
        if job is None or job.state is not JobState.UP or not self._followed(job):
            return soon
        job_state, run_state = self.store.states(job.id, job.current_run)
        if job_state is not JobState.UP or run_state is not RunState.RUNNING:
            return soon
        later = now + self._safety_interval() * random.uniform(0.9, 1.1)   # spread, never in step
        limit = next_limit_moment(job, None)
        return min(later, max(soon, limit)) if limit is not None else later

    def _safety_interval(self) -> float:
        checked, count = self._active
        if time.monotonic() - checked > WATCHER_CHECK:
            count = self.store.active_count()
            self._active = (time.monotonic(), count)
        return max(self.settings.safety_interval, count * SAFETY_SHARE)

    def _followed(self, job: Job) -> bool:
        """Whether this host's watcher follows the job's run: the backend's runs are this host's, no desktop
        needs supervising, and a watcher holds the host's lease."""
        if not self.lifecycle.ctx.backend_of(job).watchable_here:
            return False
        if self.lifecycle.ctx.spec_of(job).desktop.enabled:
            return False
        checked, alive = self._watcher
        if time.monotonic() - checked > WATCHER_CHECK:
            alive = self.store.observation.watcher_alive(self.host)
            self._watcher = (time.monotonic(), alive)
        return alive

    def housekeeping(self) -> None:
        """Once per beat tick: jobs the schedule lacks join it, and leftovers on nodes that answer again die."""
        try:
            self.store.observation.adopt_missing()
            head = self.store.queue_head()
            if head is not None:  # the head of the queue is due at every tick (a lost kick costs one tick)
                self.store.observation.bring_forward(head, time.time())
            lock = self.store.locks.reconcile(max(10.0, 5 * self.settings.reconcile_interval))
            if lock.acquire():  # one worker at a time kills leftovers; the others skip this tick's turn
                try:
                    kill_leftovers(self.store, lambda name: get_backend(name, self.settings))
                finally:
                    try:
                        lock.release()
                    except Exception:  # noqa: BLE001 - lease expired: harmless
                        pass
        except Exception:  # noqa: BLE001 - logged, and the next tick tries again
            log.exception("reconcile housekeeping failed")
