"""Drives many jobs through their whole life (submit, run, terminate) a window at a time, as a user would."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import redis

from orchestrator.model.states import JOB_TERMINAL, RUN_ENDED, JobState

from .conftest import recording_job


class Lifecycles:
    """Submits `total` recording jobs, at most `window` alive at once, terminates each once its run has
    ended, and returns when all are terminal. Reads Redis directly (cheap), and rides out a Redis outage."""

    def __init__(self, client, starts: Path, window: int, seconds: float = 1.0, job_timeout: float = 240):
        self.client = client
        self.starts = starts
        self.window = window
        self.seconds = seconds
        self.job_timeout = job_timeout
        self.submitted: list[str] = []
        self.submitted_at: dict[str, float] = {}
        self.ended_at: dict[str, float] = {}   # when the driver saw each job terminal (monotonic)
        self._alive: set[str] = set()
        self._lock = threading.Lock()

    def alive(self) -> set[str]:
        """Jobs submitted and not yet terminal: the ones a fault injected now can hit."""
        with self._lock:
            return set(self._alive)

    def submit(self, count: int, prefix: str = "life") -> list[str]:
        ids = []
        for _ in range(count):
            name = f"{prefix}-{len(self.submitted):04d}"
            job_id = self.client.submit_data(recording_job(name, self.starts, self.seconds))
            with self._lock:
                self.submitted.append(job_id)
                self._alive.add(job_id)
            self.submitted_at[job_id] = time.monotonic()
            ids.append(job_id)
        return ids

    def run(self, total: int, prefix: str = "life") -> list[str]:
        terminated: set[str] = set()
        while True:
            room = min(self.window - len(self._alive), total - len(self.submitted))
            if room > 0:
                self.submit(room, prefix)
            try:
                self._step(terminated)
            except redis.RedisError:
                time.sleep(0.2)  # Redis is down (a drill): look again when it is back
                continue
            if len(self.submitted) == total and not self._alive:
                return self.submitted
            stuck = [j for j in self._alive if time.monotonic() - self.submitted_at[j] > self.job_timeout]
            if stuck:
                raise AssertionError(f"jobs not terminal after {self.job_timeout}s: "
                                     + "; ".join(self.describe(j) for j in stuck))
            time.sleep(0.1)

    def describe(self, job_id: str) -> str:
        """A stuck job for the failure message: its state, its run's, and its last events."""
        store = self.client.store
        job = store.get_job(job_id)
        run = store.get_run(job_id, job.current_run)
        events = [f"{e.kind.value} {e.data}" for e in self.client.events(job_id)[-6:]]
        return (f"{job_id} {job.state.value}, run {run.state.value} attempt {run.attempt} "
                f"pid {run.pid} reason {run.reason!r}; last events: {events}")

    def _step(self, terminated: set[str]) -> None:
        store = self.client.store
        for job_id in sorted(self.alive()):
            job = store.get_job(job_id)
            if job.state in JOB_TERMINAL:
                self.ended_at[job_id] = time.monotonic()
                with self._lock:
                    self._alive.discard(job_id)
            elif job.state is JobState.UP and job_id not in terminated:
                if store.get_run(job_id, job.current_run).state in RUN_ENDED:
                    self.client.terminate(job_id)
                    terminated.add(job_id)
