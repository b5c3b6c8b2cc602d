"""Names every file of a job and of its runs, on the head node (one place, so nobody guesses paths)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    """The run directory: the solver's working directory, with engine bookkeeping per launch attempt
    under .e2e/attempt-N/ (a restart is a new attempt in the same directory, with its own claim)."""

    root: Path
    attempt: int = 1

    def for_attempt(self, attempt: int) -> RunPaths:
        return RunPaths(self.root, attempt)

    @property
    def meta(self) -> Path:
        return self.root / ".e2e" / f"attempt-{self.attempt}"

    @property
    def wrapper(self) -> Path:
        return self.meta / "wrapper.sh"

    @property
    def script(self) -> Path:
        return self.root / "run.sh"

    @property
    def hostfile(self) -> Path:
        return self.root / "hostfile"

    @property
    def stage(self) -> Path:
        """The staging helper run scripts call as $E2E_STAGE (templates/common/stage.sh.j2)."""
        return self.meta / "stage.sh"

    @property
    def claim(self) -> Path:
        return self.meta / "claim"

    @property
    def pid(self) -> Path:
        return self.meta / "pid"

    @property
    def started_at(self) -> Path:
        return self.meta / "started_at"

    @property
    def exit_code(self) -> Path:
        return self.meta / "exit_code"

    @property
    def ended_at(self) -> Path:
        return self.meta / "ended_at"

    @property
    def wrapper_log(self) -> Path:
        return self.meta / "wrapper.log"

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))


@dataclass(frozen=True)
class JobPaths:
    """The job directory on the head node: the work folder and one directory per run."""

    root: Path

    @classmethod
    def for_job(cls, home: Path, job_id: str) -> JobPaths:
        return cls(home / "jobs" / job_id)

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def edits(self) -> Path:
        """Input files replaced by `e2e edit --file`, one folder per spec revision."""
        return self.root / "edits"

    def run(self, run_id: str, attempt: int = 1) -> RunPaths:
        return RunPaths(self.root / "runs" / run_id, attempt)

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def work_of(self, run_id: str) -> Path:
        """The desktop's copy of one run directory: work/<run-id>/ (so reruns never mix)."""
        return self.work / run_id

    @property
    def sync(self) -> SyncPaths:
        return SyncPaths(self.root / ".sync")


@dataclass(frozen=True)
class SyncPaths:
    """The job's sync daemon: its pid, single-instance lock, stop request, per-run state and event log."""

    root: Path

    @property
    def pid(self) -> Path:
        return self.root / "pid"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def stop_request(self) -> Path:
        return self.root / "stop"

    @property
    def done(self) -> Path:
        return self.root / "done"

    @property
    def heartbeat(self) -> Path:
        return self.root / "heartbeat"

    @property
    def spawned_at(self) -> Path:
        return self.root / "spawned_at"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def log(self) -> Path:
        return self.root / "daemon.log"

    def state(self, run_id: str) -> Path:
        return self.root / f"{run_id}.state.json"


def results_dir(home: Path, job_id: str) -> Path:
    """Where a terminated job's files are kept."""
    return home / "results" / job_id
