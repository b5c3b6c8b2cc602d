"""What every step of a job's life works with: the store, the settings, the solver plugins, and how a job's
backend, nodes, folders, validated spec, plugin and services are found. Shared (by composition) by the
lifecycle's steps and the stopping steps."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from orchestrator.cluster import get_backend
from orchestrator.cluster.base import ClusterBackend, Node
from orchestrator.cluster.identity import account_for
from orchestrator.engine.runctl import RunControl
from orchestrator.model.errors import E2EError
from orchestrator.model.events import EventKind
from orchestrator.model.identity import Account
from orchestrator.model.paths import JobPaths
from orchestrator.model.records import Job
from orchestrator.model.services import ServiceContext, services
from orchestrator.model.settings import Settings
from orchestrator.model.spec import validate_spec
from orchestrator.store.jobs import JobStore
from solvers.base import Registry, SolverPlugin

SPECS_KEPT = 256  # validated specs kept, one per (job, revision): a worker process serves many jobs


@dataclass
class EngineContext:
    """The engine's shared parts; every method only reads (the store writes)."""

    store: JobStore
    settings: Settings
    plugins: Registry
    # Ask for a provision of a queued job soon, in another worker process (the worker passes a task sender;
    # without one, the reconcile pass gets to it): how a burst of submissions takes free nodes as fast as they
    # come, instead of one job per pass.
    kick: Callable[[str], None] | None = None
    _specs: OrderedDict[tuple[str, int], tuple[dict[str, Any], Any]] = field(default_factory=OrderedDict,
                                                                               repr=False)

    def kick_queue(self) -> None:
        """The first job of the queue may take nodes now (one before it did, or nodes were freed)."""
        if self.kick is None:
            return
        head = self.store.queue_head()
        if head is not None:
            try:
                self.kick(head)
            except Exception:  # noqa: BLE001 - a lost kick costs a reconcile pass, never a job
                pass

    @property
    def control(self) -> RunControl:
        return RunControl(self.store, self.settings)

    def backend_of(self, job: Job) -> ClusterBackend:
        return get_backend(job.backend, self.settings)

    def account_of(self, job: Job) -> Account | None:
        """The OS account the job's processes and files belong to (resolved at submit, looked up cached);
        None: the engine's own."""
        return account_for(job.account)

    def nodes_of(self, job: Job, backend: ClusterBackend) -> list[Node]:
        return backend.nodes_named(job.nodes)

    def paths(self, job_id: str) -> JobPaths:
        return JobPaths.for_job(self.settings.root, job_id)

    def spec_of(self, job: Job) -> Any:
        """The job's validated spec, parsed once per (job, revision): a spec changes only with a new revision
        (the stored spec is compared too, so a record whose spec changed otherwise is never served stale)."""
        key = (job.id, job.revision)
        cached = self._specs.get(key)
        if cached is not None and cached[0] == job.spec:
            self._specs.move_to_end(key)
            return cached[1]
        spec = validate_spec(job.spec, check_paths=False, source=f"job {job.id} spec")
        self._specs[key] = (job.spec, spec)
        while len(self._specs) > SPECS_KEPT:
            self._specs.popitem(last=False)
        return spec

    def plugin_of(self, job: Job) -> SolverPlugin:
        return self.plugins.get(job.solver)

    def service_context(self, job: Job) -> ServiceContext | None:
        backend = self.backend_of(job)
        nodes = self.nodes_of(job, backend)
        if not nodes:
            return None
        return ServiceContext(job=job, spec=self.spec_of(job), backend=backend, nodes=nodes,
                              paths=self.paths(job.id), store=self.store, settings=self.settings)

    def each_service(self, job: Job, step: str) -> bool:
        """Run one step (start, supervise, stop) of every wanted service; True when all stops finished."""
        ctx = self.service_context(job)
        if ctx is None:
            return True
        done = True
        for service in services():
            try:
                if not service.wanted(ctx):
                    continue
                result = getattr(service, step)(ctx)
                done = done and (result is not False)
            except (E2EError, OSError) as exc:  # a failing service is reported, never fatal to the job
                self.store.append_event(job.id, EventKind.WARNING,
                                        {"service": service.name, "step": step, "message": str(exc)})
        return done
