"""When a queued job is expected to start: the engine's queue replayed against its nodes' expected release times.

The engine leases strictly first in, first out (one queue for every backend: only its head may take nodes), so
a queued job starts when every job ahead of it has started and enough of its backend's nodes are free. A
node's expected release is now when it is free, its job's start plus `limits.walltime` when it is leased,
and unknown when that job has no walltime (it may run for ever); drained nodes count as never free. The
replay takes, for each job in queue order, the earliest-released nodes it needs; a job whose start depends on
an unknown release has no estimate, and neither has any job behind it, with the reason named (as Slurm's
`squeue --start` has none for jobs without a time limit ahead of them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Waiting:
    """A queued job, as the replay needs it."""

    id: str
    backend: str
    nodes: int
    walltime: float | None


@dataclass(frozen=True)
class Holder:
    """A running (or provisioning) job that holds nodes: when it ends, if known."""

    id: str
    ends_at: float | None


@dataclass(frozen=True)
class Forecast:
    position: int                 # 1: the head of the queue
    starts_at: float | None       # epoch seconds; None: no estimate
    why: str                      # what it waits for, or why there is no estimate


@dataclass
class _Pool:
    releases: list[tuple[float, str]] = field(default_factory=list)   # (when, by which job: "" = free now)


def forecast(queue: list[Waiting], pools: dict[str, list[str | None]], holders: dict[str, Holder],
             now: float) -> dict[str, Forecast]:
    """queue: the queued jobs in order; pools: backend -> each usable node's holder (None: free; drained nodes
    left out); holders: job id -> Holder. Returns job id -> Forecast."""
    state = {backend: _Pool(sorted(_release(holder, holders, now) for holder in nodes))
             for backend, nodes in pools.items()}
    out: dict[str, Forecast] = {}
    previous, blocked = now, ""
    for position, job in enumerate(queue, 1):
        if blocked:
            out[job.id] = Forecast(position, None, blocked)
            continue
        if job.backend not in state:
            blocked = f"the engine has not listed its {job.backend} nodes yet"
            out[job.id] = Forecast(position, None, blocked)
            continue
        pool = state[job.backend]
        if job.nodes > len(pool.releases):
            blocked = f"job {job.id} needs {job.nodes} {job.backend} nodes; {len(pool.releases)} are in service"
            out[job.id] = Forecast(position, None, blocked if position == 1 else f"waits behind {blocked}")
            blocked = f"waits behind {blocked}"
            continue
        taken, pool.releases = pool.releases[:job.nodes], pool.releases[job.nodes:]
        when, by = max(taken)
        start = max(previous, when)
        if math.isinf(start):
            why = f"job {by} holds the nodes it needs and has no walltime (limits.walltime)"
            out[job.id] = Forecast(position, None, why)
            blocked = f"waits behind {job.id}, which has no estimate"
            continue
        ends = start + job.walltime if job.walltime else math.inf
        pool.releases = sorted(pool.releases + [(ends, job.id)] * job.nodes)
        why = "nodes are free" if start <= now else f"until job {by} ends" if by else "after the jobs ahead"
        out[job.id] = Forecast(position, start, why)
        previous = start
    return out


def _release(holder: str | None, holders: dict[str, Holder], now: float) -> tuple[float, str]:
    if holder is None:
        return now, ""
    known = holders.get(holder)
    ends = known.ends_at if known is not None else None
    return (max(now, ends) if ends is not None else math.inf), holder
