"""Per-job services beside the runs (the desktop, file sync): the contract and their registry."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.cluster.base import ClusterBackend, Node
    from orchestrator.model.paths import JobPaths
    from orchestrator.model.records import Job
    from orchestrator.model.settings import Settings
    from orchestrator.store.jobs import JobStore

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "orchestrator.services"


@dataclass(frozen=True)
class ServiceContext:
    """What a service gets to act on one job: its record, spec, nodes (head node first) and folders."""

    job: Job
    spec: Any                      # the validated job spec
    backend: ClusterBackend
    nodes: list[Node]
    paths: JobPaths
    store: JobStore
    settings: Settings

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def head(self) -> Node:
        return self.nodes[0]


class JobService(ABC):
    """A supervised per-job process or duty. Every method is idempotent and short (it runs in a task):
    start detached processes and record them; never block on them."""

    name: str

    def wanted(self, ctx: ServiceContext) -> bool:
        """Whether this job has this service at all (e.g. desktop.enabled)."""
        return True

    @abstractmethod
    def start(self, ctx: ServiceContext) -> None:
        """Called once the job is UP (and again after a crash): start, or adopt what already runs."""

    @abstractmethod
    def supervise(self, ctx: ServiceContext) -> None:
        """Called at every look at the job while it is UP (rung or swept): check health, restart what died."""

    @abstractmethod
    def stop(self, ctx: ServiceContext) -> bool:
        """Called while the job terminates, after the runs stopped and before results are collected.
        True once fully stopped (a final sync done); False to be called again on the next pass."""


@lru_cache(maxsize=1)
def services() -> tuple[JobService, ...]:
    """The installed services, from the `orchestrator.services` entry-point group, in name order."""
    found: dict[str, JobService] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            continue  # the same distribution seen twice (editable installs)
        found[ep.name] = ep.load()()
    return tuple(found[name] for name in sorted(found))
