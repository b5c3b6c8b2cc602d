"""What each step of a job's life does: provision, launch, observe, terminate; reconcile drives them all."""

from __future__ import annotations

import logging
import time
from typing import Callable

from orchestrator.cluster.base import AllocationPending, ClusterBackend, HostKeyRefused, Node
from orchestrator.cluster.identity import acting_as
from orchestrator.engine.context import EngineContext
from orchestrator.engine.edits import apply_overlay, overlay
from orchestrator.engine.faults import fault_point
from orchestrator.engine.limits import check_limits
from orchestrator.engine.materialize import materialize_run, prepare_job_tree
from orchestrator.engine.node_health import fail_on_node_fault, restart_on_replacement, wants_recovery
from orchestrator.engine.rules import apply_rules
from orchestrator.engine.runctl import adopt_started
from orchestrator.engine.series import follow_series
from orchestrator.engine.stopping import Stopping, remove_stale_files
from orchestrator.model.errors import E2EError
from orchestrator.model.events import EventKind
from orchestrator.model.paths import JobPaths, RunPaths
from orchestrator.model.records import Job, Run, Signals, StopIntent
from orchestrator.model.settings import Settings
from orchestrator.model.states import RUN_ENDED, JobState, RunState
from orchestrator.store.jobs import JobStore
from solvers.base import Registry, RunMode, SolverPlugin, registry

log = logging.getLogger(__name__)

PID_WAIT = 2.0          # seconds launch waits for the wrapper's pid before leaving it to reconcile
LOG_CHUNK = 1 << 20     # bytes of solver log parsed per observation


class Lifecycle:
    """The engine's steps, each short and idempotent: safe to run twice, safe to resume after a crash.
    What they share is an EngineContext; stopping a run and terminating a job are the Stopping steps."""

    def __init__(self, store: JobStore, settings: Settings, plugins: Registry,
                 kick: Callable[[str], None] | None = None) -> None:
        self.ctx = EngineContext(store, settings, plugins, kick)
        self.stopping = Stopping(self.ctx, observe=self.observe)

    @classmethod
    def create(cls, store: JobStore, settings: Settings, kick: Callable[[str], None] | None = None) -> Lifecycle:
        return cls(store, settings, registry(), kick)

    @property
    def store(self) -> JobStore:
        return self.ctx.store

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    # -- what callers outside the engine look up (the client's live edit)
    def backend_of(self, job: Job) -> ClusterBackend:
        return self.ctx.backend_of(job)

    def nodes_of(self, job: Job, backend: ClusterBackend) -> list[Node]:
        return self.ctx.nodes_of(job, backend)

    def paths(self, job_id: str) -> JobPaths:
        return self.ctx.paths(job_id)

    def plugin_of(self, job: Job) -> SolverPlugin:
        return self.ctx.plugin_of(job)

    # -- the stopping steps (the control and terminate tasks call these)
    def stop_run(self, job: Job, run: Run, intent: StopIntent = StopIntent.TERMINATE) -> None:
        self.stopping.stop_run(job, run, intent)

    def apply_signals(self, job_id: str, run_id: str) -> None:
        self.stopping.apply_signals(job_id, run_id)

    def drive_termination(self, job_id: str) -> None:
        self.stopping.drive_termination(job_id)

    # -- provision
    def provision(self, job_id: str) -> None:
        """QUEUED -> PROVISIONING (lease nodes) -> UP (directories ready), then launch the current run."""
        ctx = self.ctx
        job = self.store.get_job(job_id)
        backend = ctx.backend_of(job)
        if job.state is JobState.QUEUED:
            spec = ctx.spec_of(job)
            leased = self.store.allocate(backend.name, job_id, spec.cluster.nodes,
                                         backend.inventory_names())
            if isinstance(leased, str):
                return  # waits in the queue (behind another job, or for free nodes); reconcile retries
            if not self.store.transition_job(job_id, JobState.PROVISIONING, expect=[JobState.QUEUED],
                                             data={"nodes": leased}, nodes=leased):
                return
            ctx.kick_queue()  # the next job leases while this one is prepared: a burst fills free nodes at once
            job = self.store.get_job(job_id)
        if job.state is not JobState.PROVISIONING:
            return
        try:
            nodes = ctx.nodes_of(job, backend)
            account = ctx.account_of(job)  # a scheduler's allocation is the owner's too (slurm: sbatch --uid)
            backend.allocate(job_id, nodes, ctx.spec_of(job).cluster.cores_per_node, account)  # spec cached
            for node in nodes:
                backend.prepare_node(node, job_id, account)
            prepare_job_tree(ctx.paths(job_id), ctx.settings.root, account)
        except AllocationPending as exc:   # the site's scheduler queued it: wait (reconcile asks again), say when
            if job.waiting != exc.message:
                self.store.update_job(job_id, waiting=exc.message)
                self.store.append_event(job_id, EventKind.WARNING, {"step": "provision", "message": exc.message,
                                                                    "expected_start": exc.expected_start})
            return
        except (E2EError, OSError) as exc:
            if isinstance(exc, HostKeyRefused):  # an access refusal, searchable with the desktop's
                self.store.append_event(job_id, EventKind.ACCESS_REFUSED, {
                    "entry": "ssh", "reason": exc.reason, "message": exc.message})
            self.store.append_event(job_id, EventKind.ERROR, {"step": "provision", "message": str(exc)})
            self.store.transition_job(job_id, JobState.FAILED, expect=[JobState.PROVISIONING], error=str(exc))
            self.store.release(backend.name, job_id)
            ctx.kick_queue()
            return
        if self.store.transition_job(job_id, JobState.UP, expect=[JobState.PROVISIONING], up_at=time.time(),
                                     waiting=""):
            # The run first, then the job's services (desktop, sync): the solver is what the user waits for,
            # and the services find whatever it wrote meanwhile (the sync's first pass scans the whole folder).
            self.launch(job_id, job.current_run)
            ctx.each_service(self.store.get_job(job_id), "start")

    # -- launch
    def launch(self, job_id: str, run_id: str, redrive: bool = False) -> None:
        """PENDING -> LAUNCHING -> RUNNING, for the run's current attempt. Only the caller that moved the run
        to LAUNCHING spawns it (or reconcile, re-driving a launch that stalled); and a second spawn never
        starts a second solver: the wrapper claims its attempt with an atomic mkdir."""
        ctx = self.ctx
        job = self.store.get_job(job_id)
        if job.state is not JobState.UP:
            return
        run = self.store.get_run(job_id, run_id)
        if run.state is RunState.PENDING:
            if not self.store.transition_run(job_id, run_id, RunState.LAUNCHING, expect=[RunState.PENDING],
                                             data={"attempt": run.attempt},
                                             launch_requested_at=time.time()):
                return
            run = self.store.get_run(job_id, run_id)
        elif not redrive:
            return
        if run.state is not RunState.LAUNCHING:
            return
        backend = ctx.backend_of(job)
        nodes = ctx.nodes_of(job, backend)
        paths = ctx.paths(job_id).run(run_id, run.attempt)
        head = nodes[0]
        if not backend.exists(head, paths.claim):
            try:
                if paths.attempt > 1:  # a restart starts from what every node wrote, gathered to the head
                    backend.stage_out(nodes, paths.root, ctx.account_of(job))
                self._write_run_files(job, run, nodes, paths, stage_hosts(backend, nodes))
            except (E2EError, OSError) as exc:
                reason = getattr(exc, "message", None) or str(exc)
                self.store.transition_run(job_id, run_id, RunState.FAILED, expect=[RunState.LAUNCHING],
                                          data={"reason": reason}, reason=reason, ended_at=time.time())
                return
            backend.stage_in(nodes, paths.root, ctx.account_of(job))  # the nodes' copies are written as the owner
            backend.hand_over(head, paths.root, ctx.account_of(job))  # the run's files become the job's
            step = "launch" if paths.attempt == 1 else "restart"  # drills can target either
            fault_point(f"{step}.before_spawn")
            backend.spawn_detached(head, ["bash", str(paths.wrapper)], cwd=paths.root, account=ctx.account_of(job))
            fault_point(f"{step}.after_spawn")
        deadline = time.monotonic() + PID_WAIT
        while time.monotonic() < deadline:
            if adopt_started(self.store, job_id, run_id, backend, head, paths):
                return
            time.sleep(0.002)

    def _write_run_files(self, job: Job, run: Run, nodes: list[Node], paths: RunPaths,
                         stage_to: tuple[str, ...] = ()) -> None:
        """Everything written into the run directory at launch, restart and rerun, written AS THE JOB'S
        ACCOUNT (this thread's fsuid): the directory is the job's by then, and a link it planted there (its
        run folder, system/controlDict) must lead nowhere the account could not write or read itself."""
        account = self.ctx.account_of(job)
        try:
            with acting_as(account):
                self._write_as_account(job, run, nodes, paths, stage_to)
        except PermissionError as exc:
            who = account.name if account is not None else "the engine's account"
            raise OSError(f"writing the run's files as {who}: {exc.strerror}: "
                          f"{exc.filename or paths.root}") from None

    def _write_as_account(self, job: Job, run: Run, nodes: list[Node], paths: RunPaths,
                          stage_to: tuple[str, ...]) -> None:
        ctx = self.ctx
        mode = RunMode(run.mode or RunMode.FRESH)
        plugin = ctx.plugin_of(job)
        if paths.attempt > 1 or run.id != "run-001":
            remove_stale_files(plugin, paths.root)  # a leftover stop file would stop the new attempt at once
        # Edited input files go in first: a fresh prepare copies inputs without overwriting them, and a
        # restart's prepare applies the spec's parameters on top of them.
        paths.root.mkdir(parents=True, exist_ok=True)
        apply_overlay(overlay(ctx.paths(job.id), run.revision or job.revision or 1), paths.root)
        prepared = materialize_run(ctx.spec_of(job), plugin, job.id, run.id, nodes, paths, mode=mode,
                                   site_env=self.settings.solver_env, stage_hosts=stage_to,
                                   account=ctx.account_of(job))
        previous = run.log_file
        offset = run.log_offset or 0
        log_path = paths.root / prepared.log_file
        if previous != prepared.log_file or not log_path.exists() or log_path.stat().st_size < offset:
            offset = 0  # a new log (or one the solver will overwrite): parse it from the start
        self.store.update_run(job.id, run.id, log_file=prepared.log_file, log_offset=offset,
                              progress_total=prepared.progress_total, node=nodes[0].name, info=prepared.info,
                              step_logs=prepared.step_logs or None)

    # -- observe
    def observe(self, job: Job, run: Run) -> None:
        """Move an active run along: launch or adopt it, parse new log, notice the exit, apply pending
        freeze/stop effects, escalate slow stops."""
        ctx = self.ctx
        job_id, run_id = job.id, run.id
        state = run.state
        if state is RunState.PENDING:
            if job.state is JobState.UP and time.time() - run.updated_at > self.settings.launch_timeout / 2:
                self.launch(job_id, run_id)  # the launch task was lost
            return
        backend = ctx.backend_of(job)
        nodes = ctx.nodes_of(job, backend)
        if not nodes or state in RUN_ENDED:
            if wants_recovery(job, run):
                self.recover_node_fault(job_id, run_id)  # one a crashed worker left undone
            return
        head = nodes[0]
        paths = ctx.paths(job_id).run(run_id, run.attempt)
        if state is RunState.LAUNCHING:
            if adopt_started(self.store, job_id, run_id, backend, head, paths):
                return
            if time.time() - (run.launch_requested_at or 0) > self.settings.launch_timeout:
                log.warning("re-driving launch of %s/%s", job_id, run_id)
                self.store.update_run(job_id, run_id, launch_requested_at=time.time())
                self.launch(job_id, run_id, redrive=True)
            return
        plugin = ctx.plugin_of(job)
        if fail_on_node_fault(self.store, job, run, backend, nodes):
            self.recover_node_fault(job_id, run_id)
            return
        self._follow_log(job_id, run, plugin, backend, head, paths)
        follow_series(self.store, job_id, run, plugin, backend, head, paths)
        code = exit_code(backend, head, paths)
        if code is None:  # a run that has ended is judged by its end, not stopped by a rule
            apply_rules(self.store, job, run, ctx.spec_of(job).monitor.rules, self._rule_stop)
        if code is None and not backend.group_alive(head, run.pid):
            code = exit_code(backend, head, paths)  # the wrapper may have recorded it and left just now
            if code is None:
                reason = "the run's processes are gone and no exit code was recorded (killed?)"
                to = stopped_state(run) if state is RunState.STOPPING else RunState.FAILED
                to = RunState.STOPPED if to is RunState.COMPLETED else to  # no exit code: no answer to stand by
                self.store.transition_run(job_id, run_id, to, expect=[state], data={"reason": reason},
                                          reason=reason, ended_at=time.time())
                return
        if code is not None:
            try:  # an ended run's output belongs on the head: a restart reads its checkpoint there at once
                backend.stage_out(nodes, paths.root, ctx.account_of(job))
            except (E2EError, OSError) as exc:  # the next attempt's launch gathers again
                log.warning("gathering %s/%s to the head failed: %s", job_id, run_id, exc)
            self._finish(job_id, run, plugin, code, backend, head, paths)
        elif state is RunState.FROZEN and run.signals is not Signals.FROZEN:
            ctx.control.freeze(backend, nodes, job_id, run, ctx.account_of(job))   # the freeze task was lost
        elif state is RunState.RUNNING and run.signals is Signals.FROZEN:
            ctx.control.thaw(backend, nodes, job_id, run, ctx.account_of(job))     # the resume task was lost
        elif state is RunState.STOPPING:
            if run.stop_sent_at is None:
                ctx.control.stop(plugin, backend, nodes, job_id, run, paths.root,
                                 ctx.account_of(job))  # the stop task was lost
            else:
                ctx.control.escalate(backend, nodes, job_id, run, ctx.account_of(job))

    def _rule_stop(self, job: Job, run: Run, intent: StopIntent, reason: str) -> None:
        self.stopping.stop_run(job, run, intent, reason)

    def recover_node_fault(self, job_id: str, run_id: str) -> None:
        """restart_on_node_failure: the run failed by a node fault restarts on replacement nodes."""
        job = self.store.get_job(job_id)
        if restart_on_replacement(self.store, self.settings, job_id, run_id, self.ctx.backend_of(job)):
            self.launch(job_id, run_id)

    def _follow_log(self, job_id: str, run: Run, plugin: SolverPlugin, backend: ClusterBackend,
                    head: Node, paths: RunPaths) -> None:
        if not run.log_file:
            return
        offset = run.log_offset or 0
        data = backend.read_bytes(head, paths.root / run.log_file, offset, LOG_CHUNK)
        if not data:
            return
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            return  # no complete line yet
        progress = plugin.parse_progress(data[:cut].decode(errors="replace"), run.progress)
        if progress is None:
            self.store.update_run(job_id, run.id, log_offset=offset + cut)
            return
        if progress.total is None and run.progress_total is not None:
            progress = progress.model_copy(update={"total": run.progress_total})
        self.store.record_progress(job_id, run.id, progress, offset + cut)
        run.progress, run.log_offset, run.progress_at = progress, offset + cut, time.time()

    def _finish(self, job_id: str, run: Run, plugin: SolverPlugin, code: int,
                backend: ClusterBackend, head: Node, paths: RunPaths) -> None:
        tail = b""
        if run.log_file:
            size_hint = max(0, (run.log_offset or 0) - 8192)
            tail = backend.read_bytes(head, paths.root / run.log_file, size_hint) or b""
        outcome = plugin.judge_exit(code, tail.decode(errors="replace")[-8192:])
        if run.state is RunState.STOPPING:
            to = stopped_state(run)
            if not outcome.ok:  # a failed checkpoint is a failure; a rule's stop without a clean end, a stop
                to = RunState.FAILED if run.stop_intent is StopIntent.PAUSE else RunState.STOPPED
            verbs = {RunState.PAUSED: "paused on request", RunState.STOPPED: "stopped on request"}
            verb = verbs.get(to, "pause failed")
            reason = f"{verb} ({outcome.reason})"
            if run.stop_reason:  # a monitor rule asked: the rule says why
                reason = run.stop_reason if outcome.ok else f"{run.stop_reason}; the solver did not end " \
                                                              f"cleanly ({outcome.reason})"
        else:
            to, reason = (RunState.COMPLETED if outcome.ok else RunState.FAILED), outcome.reason
        ended = backend.read_bytes(head, paths.ended_at) or b""
        self.store.transition_run(job_id, run.id, to, expect=[run.state],
                                  data={"exit_code": code, "reason": reason}, exit_code=code, reason=reason,
                                  ended_at=float(ended or time.time()))

    # -- reconcile
    def reconcile_job(self, job_id: str) -> Job:
        """One observation of one job, moving its state machine where the world has moved; the job as it was
        read (engine/sweep.py decides from it when to look again)."""
        job = self.store.get_job(job_id)
        state = job.state
        if state is JobState.QUEUED:
            self.provision(job_id)
        elif state is JobState.PROVISIONING:
            if time.time() - job.updated_at > self.settings.launch_timeout:
                self.provision(job_id)
        elif state is JobState.UP:
            run = self.store.get_run(job_id, job.current_run)
            self.observe(job, run)
            self.ctx.each_service(job, "supervise")
            if check_limits(self.store, job, self.store.get_run(job_id, run.id)) is not None:
                # at once, not at the job's next look: a batch job's nodes go back to the queue as its run ends
                self.drive_termination(job_id)
        elif state is JobState.TERMINATING:
            self.drive_termination(job_id)
        return job


def stage_hosts(backend: ClusterBackend, nodes: list[Node]) -> tuple[str, ...]:
    """Addresses of the run's other nodes that keep their own copy of the run directory: the first node's
    run script copies what it wrote there, and gathers their outputs back ($E2E_STAGE)."""
    first = nodes[0].address
    found = [n.address for n in nodes[1:] if n.address != first and not backend.shares_storage(n)]
    return tuple(dict.fromkeys(found))


def exit_code(backend: ClusterBackend, head: Node, paths: RunPaths) -> int | None:
    raw = backend.read_bytes(head, paths.exit_code)
    return int(raw) if raw is not None and raw.strip() else None


def stopped_state(run: Run) -> RunState:
    if run.stop_intent is StopIntent.COMPLETE:
        return RunState.COMPLETED  # a monitor rule's stop: the solver wrote its fields and the answer stands
    return RunState.PAUSED if run.stop_intent is StopIntent.PAUSE else RunState.STOPPED
