"""Fault-suite helpers: a solver that records its starts, the tally every suite asserts and records, a Redis
that can be killed -9 and started again on its AOF, and the long/short sizing switch (E2E_LONG=1)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from orchestrator.cluster.local import tagged_processes
from orchestrator.model.states import JobState, RunState
from orchestrator.worker.stack import free_port, wait_for_redis
from tests.conftest import require
from tests.integration.conftest import redis_url  # noqa: F401 - the session's real Redis, as a fixture here too
from tests.resilience import record

LONG = os.environ.get("E2E_LONG", "") == "1"


def sized(short: int | float, long: int | float):
    """The CI size of a suite, or its long variant's under E2E_LONG=1."""
    return long if LONG else short


# Records every start (run tag and attempt) in a shared file, writes an output file the test checks after
# collection, and finishes after `seconds`. The `done` line is written last: a collected output without it
# is an output the engine cut short.
SOLVER = ('echo "$E2E_RUN_TAG $E2E_ATTEMPT" >> {starts}; echo "$E2E_RUN_TAG" > output.txt; '
          'echo "progress: 1/2"; sleep {seconds}; echo "progress: 2/2"; echo done >> output.txt')


def recording_job(name: str, starts: Path, seconds: float = 1.0, **spec) -> dict:
    """A command-solver job spec whose solver records its starts in `starts`."""
    return {"name": name, "desktop": {"enabled": False}, **spec, "solver": {
        "name": "command", "command": ["bash", "-c", SOLVER.format(starts=starts, seconds=seconds)]}}


def starts_by_run(starts: Path) -> dict[str, list[int]]:
    """{job/run: [attempt, ...]} as the solver recorded them."""
    found: dict[str, list[int]] = {}
    if starts.exists():
        for line in starts.read_text().splitlines():
            tag, _, attempt = line.partition(" ")
            found.setdefault(tag, []).append(int(attempt or 1))
    return found


@dataclass
class Tally:
    """What every fault suite reports: the five figures of issue 9, plus what the suite measured."""

    jobs: int = 0
    affected: int = 0
    recovered: int = 0
    extra_starts: int = 0
    files_lost: int = 0
    orphans: int = 0
    problems: list[str] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)   # job ids that did not come out whole

    def problem(self, job_id: str, message: str) -> None:
        self.failed.add(job_id)
        self.problems.append(message)

    def settle(self, affected: set[str]) -> None:
        """Count the jobs a fault hit, and those of them that came out whole."""
        self.affected = len(affected)
        self.recovered = len(affected - self.failed)

    def check_jobs(self, client, job_ids: list[str], starts: Path, home: Path) -> None:
        """After every job terminated: each ran its one run once, completed, and its output reached the
        results store whole; no process of it is left."""
        recorded = starts_by_run(starts)
        self.jobs += len(job_ids)
        for job_id in job_ids:
            doc = client.status(job_id)
            tag = f"{job_id}/run-001"
            runs = recorded.get(tag, [])
            self.extra_starts += max(0, len(runs) - 1)
            if len(runs) > 1:
                self.problem(job_id, f"{tag} started {len(runs)} times: attempts {runs}")
            if doc.state is not JobState.TERMINATED:
                self.problem(job_id, f"{job_id} ended {doc.state.value}")
            run = doc.runs_detail[0]
            if run.state is not RunState.COMPLETED:
                self.problem(job_id, f"{tag} ended {run.state.value}: {run.reason}")
            out = home / "results" / job_id / "runs" / "run-001" / "output.txt"
            if not out.is_file() or out.read_text().splitlines() != [tag, "done"]:
                self.files_lost += 1
                self.problem(job_id, f"{tag}: output.txt missing or cut short in the results")
            if orphans := tagged_processes(tag):
                self.orphans += len(orphans)
                self.problem(job_id, f"{tag}: processes {orphans} left after terminate")

    def assert_clean(self) -> None:
        assert self.extra_starts == 0, self.problems
        assert self.files_lost == 0, self.problems
        assert self.orphans == 0, self.problems
        assert self.recovered == self.affected, self.problems
        assert not self.problems, self.problems

    def record(self, suite: str, figure: str, **details: object) -> None:
        """The suite's row: cases = jobs driven through the fault, passed = those that came out whole."""
        figures = {k: v for k, v in asdict(self).items() if k not in ("problems", "failed")}
        record(suite, self.jobs, self.jobs - len(self.failed), figure, **figures, problems=self.problems[:20],
               **details)


class RedisServer:
    """A redis-server with the AOF on, fsynced as the engine's embedded stack sets it (appendfsync everysec),
    that a test kills -9 and starts again on the same data and port."""

    def __init__(self, data: Path) -> None:
        binary = shutil.which("redis-server")
        require(binary is not None, "redis-server (apt-get install redis-server)")
        data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(data),
                     "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_redis(self.url, timeout=30)
        return self

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def aof_redis(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()
