"""The stopping half of a job's life: stop a run (pause or terminate), apply control signals, and drive
a TERMINATING job to TERMINATED (stop services, kill leftovers, gather, collect results, release nodes)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.cluster.owned import hand_over_tree, traverse_only
from orchestrator.engine.context import EngineContext
from orchestrator.engine.faults import fault_point
from orchestrator.engine.node_health import answering_nodes, note_leftovers
from orchestrator.engine.runctl import adopt_started, signal_run
from orchestrator.model.errors import E2EError
from orchestrator.model.events import EventKind
from orchestrator.model.paths import results_dir
from orchestrator.model.records import Job, Run, Signals, StopIntent
from orchestrator.model.states import RUN_ENDED, JobState, RunState
from orchestrator.sync.results import store_results
from solvers.base import SolverPlugin


class Stopping:
    """The stopping steps, on the engine's shared context; `observe` (the lifecycle's) moves a STOPPING run
    along while a job terminates."""

    def __init__(self, ctx: EngineContext, observe: Callable[[Job, Run], None]) -> None:
        self.ctx, self.observe = ctx, observe
        self.store = ctx.store

    # -- stop
    def stop_run(self, job: Job, run: Run, intent: StopIntent = StopIntent.TERMINATE,
                 reason: str | None = None) -> None:
        """Ask an active run to stop (intent pause ends it PAUSED, terminate STOPPED, complete COMPLETED with
        `reason`, a monitor rule's); a run that has not started yet is stopped before it can."""
        ctx, intent = self.ctx, StopIntent(intent)
        job_id, run_id = job.id, run.id
        state = run.state
        if state is RunState.PENDING:
            self.store.transition_run(job_id, run_id, RunState.STOPPED, expect=[state], reason="never started")
            return
        backend = ctx.backend_of(job)
        nodes = ctx.nodes_of(job, backend)
        paths = ctx.paths(job_id).run(run_id, run.attempt)
        if state is RunState.LAUNCHING and nodes:
            if adopt_started(self.store, job_id, run_id, backend, nodes[0], paths):
                return self.stop_run(job, self.store.get_run(job_id, run_id), intent, reason)
            try:  # take the claim ourselves, so no wrapper can start this attempt any more
                paths.meta.mkdir(parents=True, exist_ok=True)
                paths.claim.mkdir()
            except FileExistsError:
                return  # a wrapper claimed it: it records its pid within moments; next pass stops it
            self.store.transition_run(job_id, run_id, RunState.STOPPED, expect=[state], reason="stopped before start",
                                      ended_at=time.time())
            return
        if state in (RunState.RUNNING, RunState.FROZEN):
            if not self.store.transition_run(job_id, run_id, RunState.STOPPING, expect=[state],
                                             data={"intent": intent.value, **({"reason": reason} if reason else {})},
                                             stop_intent=intent, stop_reason=reason,
                                             stop_requested_at=time.time()):
                return
            run = self.store.get_run(job_id, run_id)
        if run.state is RunState.STOPPING and run.stop_sent_at is None and nodes:
            ctx.control.stop(ctx.plugin_of(job), backend, nodes, job_id, run, paths.root, ctx.account_of(job))

    def apply_signals(self, job_id: str, run_id: str) -> None:
        """Bring the run's processes in line with its state: FROZEN stopped, RUNNING continued, STOPPING
        asked to stop. The control task runs this right after a command; reconcile repeats it if lost."""
        ctx = self.ctx
        job = self.store.get_job(job_id)
        run = self.store.get_run(job_id, run_id)
        backend = ctx.backend_of(job)
        nodes = ctx.nodes_of(job, backend)
        if not nodes or not run.pid:
            return
        if run.state is RunState.FROZEN:
            ctx.control.freeze(backend, nodes, job_id, run, ctx.account_of(job))
        elif run.state is RunState.RUNNING and run.signals is Signals.FROZEN:
            ctx.control.thaw(backend, nodes, job_id, run, ctx.account_of(job))
        elif run.state is RunState.STOPPING and run.stop_sent_at is None:
            paths = ctx.paths(job_id).run(run_id, run.attempt)
            ctx.control.stop(ctx.plugin_of(job), backend, nodes, job_id, run, paths.root, ctx.account_of(job))

    # -- terminate
    def drive_termination(self, job_id: str) -> None:
        """TERMINATING: stop the run, wait for it (across passes), stop the services, then collect
        results and release the nodes."""
        ctx = self.ctx
        job = self.store.get_job(job_id)
        if job.state is not JobState.TERMINATING:
            return
        run = self.store.get_run(job_id, job.current_run)
        if run.state in (RunState.PENDING, RunState.LAUNCHING, RunState.RUNNING, RunState.FROZEN):
            self.stop_run(job, run)
            run = self.store.get_run(job_id, run.id)
        if run.state is RunState.STOPPING:
            self.observe(job, run)
            run = self.store.get_run(job_id, run.id)
        if run.state not in RUN_ENDED:
            return  # not yet: the next pass looks again
        if not ctx.each_service(job, "stop"):
            return  # a service (the final sync) is still finishing
        backend = ctx.backend_of(job)
        every = ctx.nodes_of(job, backend)
        nodes = answering_nodes(self.store, job_id, backend, every, "terminate")
        note_leftovers(self.store, job, sorted({n.name for n in every} - {n.name for n in nodes}))
        fault_point("terminate.before_kill")
        account = ctx.account_of(job)
        runs = self.store.list_runs(job_id)   # read once: a run added meanwhile never launches (not UP)
        for r in runs:  # no process of any run may outlive the cluster
            if r.pid and nodes:
                signal_run(backend, nodes, job_id, r, signal.SIGCONT, account)
                signal_run(backend, nodes, job_id, r, signal.SIGKILL, account)
        dest = results_dir(ctx.settings.root, job_id)
        paths = ctx.paths(job_id)
        for r in runs:
            if nodes and r.pid:  # runs that started wrote on the nodes: gather them first
                backend.stage_out(nodes, paths.run(r.id).root, account)
        plugin = ctx.plugin_of(job)
        for r in runs:  # locks and stop files must not block reopening the results
            remove_stale_files(plugin, paths.run(r.id).root)
        fault_point("terminate.before_collect")
        if paths.root.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            if nodes and not self._collect(job):
                return  # the run files stay where they are; the next pass tries again
            traverse_only(dest.parent)
            if dest.is_dir():
                dest.chmod(0o700)
                hand_over_tree(dest, account, ctx.settings.root)  # the results are the owner's, like the job
        backend.release(job_id)
        self.store.release(backend.name, job_id)
        self.ctx.kick_queue()   # the freed nodes go to the queue now, not at the next pass
        self.store.transition_job(job_id, JobState.TERMINATED, expect=[JobState.TERMINATING],
                                  data={"results": str(dest)}, results=str(dest), nodes=[])

    def _collect(self, job: Job) -> bool:
        """Store the job's results; on failure (a full results disk, say) say why once, as an error event and
        on the job record, and leave the job TERMINATING: the store is all-or-nothing and the sources are
        untouched, so a later pass that succeeds loses nothing."""
        try:
            store_results(self.ctx.service_context(job))
            return True
        except (E2EError, OSError) as exc:
            message = f"collecting results failed: {getattr(exc, 'message', None) or exc}; the run files are " \
                      "kept on the nodes and collection is retried"
            # once per cause, not once per pass, nor once per worker (terminate and reconcile may both try)
            if self.store.change_job_field(job.id, "collect_error", message):
                self.store.append_event(job.id, EventKind.ERROR, {"step": "collect", "message": message})
            return False


def remove_stale_files(plugin: SolverPlugin, root: Path) -> None:
    """Delete the lock and trigger files the plugin names (cleanup_patterns) from a run directory. The
    directory is the job's: a folder it swapped for a symlink (to /etc, say) is never reached through."""
    if root.resolve() != root:
        return
    for pattern in plugin.cleanup_patterns:
        for stale in root.glob(pattern):
            if stale.parent.resolve() != stale.parent:
                continue
            if stale.is_file() or stale.is_symlink():
                stale.unlink()
