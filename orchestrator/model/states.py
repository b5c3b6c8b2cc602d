"""Job and run states, and the only transitions allowed between them, as data; the states of the per-job
services (desktop, sync) and of nodes."""

from __future__ import annotations

from enum import Enum, StrEnum


class JobState(str, Enum):
    """Where a job (its cluster) is in its life."""

    QUEUED = "QUEUED"              # accepted, waiting for nodes
    PROVISIONING = "PROVISIONING"  # nodes leased, directories and inputs being prepared
    UP = "UP"                      # cluster up; runs start, finish, and the cluster stays until terminate
    TERMINATING = "TERMINATING"    # solver being stopped, results copied, nodes released
    TERMINATED = "TERMINATED"      # everything released; results kept
    FAILED = "FAILED"              # provisioning failed; terminate still collects what exists


class RunState(str, Enum):
    """Where one run (run-001, run-002, ...) of a job is."""

    PENDING = "PENDING"      # created, not launched yet
    LAUNCHING = "LAUNCHING"  # launch claimed; wrapper being spawned
    RUNNING = "RUNNING"      # wrapper started and recorded its pid
    FROZEN = "FROZEN"        # every process of the run suspended (SIGSTOP) on every node; resume continues it
    STOPPING = "STOPPING"    # a stop (pause or terminate) was requested; waiting for the solver to exit
    PAUSED = "PAUSED"        # stopped on a pause request after writing a checkpoint; restart continues it
    COMPLETED = "COMPLETED"  # solver exited and the plugin judged it a success
    FAILED = "FAILED"        # solver exited badly, or its processes vanished
    STOPPED = "STOPPED"      # stopped because the job terminates; final


JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.PROVISIONING, JobState.TERMINATING}),
    JobState.PROVISIONING: frozenset({JobState.UP, JobState.FAILED, JobState.TERMINATING}),
    JobState.UP: frozenset({JobState.TERMINATING}),
    JobState.FAILED: frozenset({JobState.TERMINATING}),
    JobState.TERMINATING: frozenset({JobState.TERMINATED}),
    JobState.TERMINATED: frozenset(),
}

# A restart moves an ended run (PAUSED, COMPLETED, FAILED) back to PENDING as its next attempt, in the
# same run directory; a rerun is a new run. STOPPED is final: it only happens while the job terminates.
RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset({RunState.LAUNCHING, RunState.STOPPED}),
    RunState.LAUNCHING: frozenset({RunState.RUNNING, RunState.FAILED, RunState.STOPPED}),
    RunState.RUNNING: frozenset({RunState.COMPLETED, RunState.FAILED, RunState.STOPPING, RunState.FROZEN}),
    RunState.FROZEN: frozenset({RunState.RUNNING, RunState.STOPPING, RunState.COMPLETED, RunState.FAILED}),
    RunState.STOPPING: frozenset({RunState.STOPPED, RunState.PAUSED, RunState.COMPLETED, RunState.FAILED}),
    RunState.PAUSED: frozenset({RunState.PENDING, RunState.STOPPED}),
    RunState.COMPLETED: frozenset({RunState.PENDING}),
    RunState.FAILED: frozenset({RunState.PENDING}),
    RunState.STOPPED: frozenset(),
}

JOB_TERMINAL = frozenset(s for s, nxt in JOB_TRANSITIONS.items() if not nxt)
# States in which solver processes may exist on nodes.
RUN_ACTIVE = frozenset({RunState.LAUNCHING, RunState.RUNNING, RunState.FROZEN, RunState.STOPPING})
# States with no process and nothing left to observe (a restart may still continue the run).
RUN_ENDED = frozenset({RunState.PAUSED, RunState.COMPLETED, RunState.FAILED, RunState.STOPPED})


def job_sources(target: JobState) -> frozenset[JobState]:
    """Every job state from which `target` may be entered."""
    return frozenset(s for s, nxt in JOB_TRANSITIONS.items() if target in nxt)


def run_sources(target: RunState) -> frozenset[RunState]:
    """Every run state from which `target` may be entered."""
    return frozenset(s for s, nxt in RUN_TRANSITIONS.items() if target in nxt)


# -- the per-job services' and the nodes' states (StrEnum: they print and format as their value)
class DesktopState(StrEnum):
    """Where the job's desktop session is (the `desktop` record published on the job)."""

    STARTING = "starting"  # session.sh spawned; no VNC login has worked yet
    READY = "ready"        # the engine logged in over RFB with the session password; the gateway listens
    FAILED = "failed"      # gave up (a missing component, or too many restarts)
    STOPPED = "stopped"    # stopped with the job


class SyncState(StrEnum):
    """What the job's sync process reports (SYNC_STATE events)."""

    STARTED = "started"      # a sync process began
    PAUSED = "paused"        # it left because the engine stopped calling (no heartbeat)
    STOPPED = "stopped"      # its final pass is done
    RESTARTED = "restarted"  # the engine started a new one after the last had died


class NodeState(StrEnum):
    """A node of a backend's inventory, as `e2e nodes` and the API show it."""

    FREE = "free"
    LEASED = "leased"    # held by a job
    DRAINED = "drained"  # out of service (after a fault, or by hand)
