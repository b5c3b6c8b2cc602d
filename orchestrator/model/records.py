"""Typed records of the engine's state: Job, Run and Attempt, and the desktop and sync records the per-job
services publish on the job, as the store decodes them (its only codec)."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from orchestrator.model.states import DesktopState, JobState, RunState, SyncState
from solvers.base import Progress, RunMode


class StopIntent(str, Enum):
    """Why a run is being stopped: a pause ends it PAUSED (restartable), a terminate ends it STOPPED."""

    PAUSE = "pause"
    TERMINATE = "terminate"
    COMPLETE = "complete"  # a monitor rule's stop: the solver writes its fields and the run ends COMPLETED


class Signals(str, Enum):
    """The freeze signal last applied to a run's processes on every node (SIGSTOP or SIGCONT)."""

    FROZEN = "frozen"
    RUNNING = "running"


class Record(BaseModel):
    """A stored record: typed fields, decoded once by the store; unknown stored fields are ignored."""

    model_config = ConfigDict(extra="ignore", validate_assignment=False, use_enum_values=False)


class Attempt(Record):
    """One ended attempt of a run (a restart continues the run in a new attempt); usage charges each."""

    attempt: int = 1
    started_at: float | None = None
    ended_at: float | None = None


class Published(Record):
    """A record a per-job service publishes on the job, stored as JSON in one job field. Only the fields it
    was given are stored and shown (as the dict it replaces did): an unset field reads as its default."""

    @model_serializer(mode="wrap")
    def _given_fields_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if key in self.model_fields_set}

    def merged(self, **fields: Any) -> Published:
        """A copy with `fields` set (validated), the rest as given so far; a field the record does not
        declare is refused (it would be dropped when stored)."""
        unknown = set(fields) - set(type(self).model_fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(sorted(unknown))}")
        return type(self).model_validate({**self.model_dump(), **fields})


class DesktopRecord(Published):
    """The job's desktop session (`Job.desktop`), written by the desktop service only."""

    state: DesktopState | None = None
    reason: str | None = None
    permanent: bool = False          # a failure restarting cannot help (a missing component)
    restarts: int = 0
    started_at: float | None = None
    ready_at: float | None = None
    term_sent_at: float | None = None
    # how to reach it
    url: str | None = None
    vnc_port: int | None = None
    web_port: int | None = None
    display: str | None = None
    ssh: list[Any] | None = None     # [user, host, port] of the head node
    access: list[str] | None = None  # the CIDRs allowed in
    firewall: bool = False           # nftables rules loaded on the head node
    password_version: int | None = None
    # how far the head node's logs were read for refusals
    refused_offset: int = 0
    xvnc_offset: int = 0


class SyncRecord(Published):
    """The job's sync (`Job.sync`); reserved: the sync reports through SYNC_STATE events today."""

    state: SyncState | None = None


class Job(Record):
    """A submitted job: its spec revision, state, leased nodes and current run."""

    id: str
    name: str = ""
    owner: str = ""
    account: str = ""  # the OS account every process and file of the job belongs to ("" = the engine's)
    state: JobState
    version: int = 1
    spec: dict[str, Any] = Field(default_factory=dict)
    backend: str = "local"
    solver: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    runs: int = 1
    current_run: str = "run-001"
    nodes: list[str] = Field(default_factory=list)
    seq: int | None = None
    revision: int = 1
    # sweep membership
    sweep: str | None = None
    sweep_index: int | None = None
    sweep_values: dict[str, Any] | None = None
    # life
    up_at: float | None = None
    waiting: str | None = None   # why a PROVISIONING job waits: the site's scheduler queued its allocation
    error: str | None = None
    terminate_requested_at: float | None = None
    terminated_by: str | None = None
    results: str | None = None
    collect_error: str | None = None
    # limits' warnings and desktop activity
    walltime_warned_at: float | None = None
    idle_shutdown_warned_at: float | None = None
    desktop_activity_at: float | None = None
    # per-job services' published state
    desktop: DesktopRecord | None = None
    sync: SyncRecord | None = None
    ssh_keys: str | None = None


class Run(Record):
    """One run of a job (run-001, run-002 ...): its current attempt's process, progress and outcome."""

    id: str
    job_id: str = ""
    state: RunState
    version: int = 1
    created_at: float = 0.0
    updated_at: float = 0.0
    attempt: int = 1
    revision: int | None = None
    mode: RunMode | None = None
    past_attempts: list[Attempt] = Field(default_factory=list)
    # where the run's log is and how far it was parsed
    log_file: str | None = None
    log_offset: int = 0
    step_logs: dict[str, str] | None = None  # the logs of the steps before the solver, by step name
    progress: Progress | None = None
    progress_total: float | None = None
    progress_at: float | None = None      # when the log last showed progress (the `stalled` rule's clock)
    # the run's monitor files (function-object tables, .sta, report files): per file, how far read and the
    # parser's memory; and the monitor rules that fired in this attempt (a restart re-arms them)
    series_files: dict[str, dict[str, Any]] = Field(default_factory=dict)
    rules_fired: list[str] = Field(default_factory=list)
    rules_warned: list[str] = Field(default_factory=list)  # rules naming what the run never reported, said once
    node: str | None = None
    info: dict[str, Any] | None = None
    # the current attempt
    launch_requested_at: float | None = None
    pid: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    # control
    stop_intent: StopIntent | None = None
    stop_reason: str | None = None        # why a rule stopped it: the COMPLETED run's reason
    stop_requested_at: float | None = None
    stop_sent_at: float | None = None
    term_sent_at: float | None = None
    kill_sent_at: float | None = None
    signals: Signals | None = None
    frozen_at: float | None = None
    resumed_at: float | None = None       # the last resume from frozen (a `stalled` rule's clock starts again)
    # node faults
    failed_nodes: list[str] | None = None
    recovery: str | None = None
