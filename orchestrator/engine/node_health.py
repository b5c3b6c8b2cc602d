"""Node faults during a run: probe the job's nodes, fail the run naming the silent ones, stop the survivors,
(restart_on_node_failure) restart it from its checkpoint on replacement nodes, and kill what a terminate
could not reach on a silent node once that node answers again."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from orchestrator.cluster.base import ClusterBackend, Node
from orchestrator.cluster.identity import account_for
from orchestrator.cluster.ssh import PROBE_TIMEOUT, node_faults
from orchestrator.engine.attempts import next_attempt
from orchestrator.engine.runctl import signal_run
from orchestrator.model.errors import BackendError, InvalidState
from orchestrator.model.events import EventKind
from orchestrator.model.records import Job, Run
from orchestrator.model.settings import Settings
from orchestrator.model.states import JobState, RunState
from orchestrator.store.jobs import JobStore
from solvers.base import registry

LEFTOVER_RETRY = 15.0   # seconds between tries to reach a node that was silent when its job terminated

# A fault counts only while solver processes may be on the nodes (a paused run has none to lose).
WATCHED = (RunState.RUNNING, RunState.FROZEN, RunState.STOPPING)


def fail_on_node_fault(store: JobStore, job: Job, run: Run, backend: ClusterBackend,
                       nodes: list[Node], timeout: float = PROBE_TIMEOUT) -> bool:
    """Probe every node of the job (in parallel, each within timeout); when any does not answer, mark the
    run FAILED with the nodes named, record an error event, and kill the run's processes on the nodes that
    still answer (MPI ranks would otherwise wait forever for the lost ones). True when the run failed."""
    if run.state not in WATCHED:
        return False
    faults = node_faults(backend, nodes, timeout)
    if not faults:
        return False
    names = sorted(faults)
    reason = f"node{'s' if len(names) > 1 else ''} {', '.join(names)} stopped answering: " + \
        "; ".join(faults[n] for n in names)
    if not store.transition_run(job.id, run.id, RunState.FAILED, expect=[run.state],
                                data={"reason": reason, "nodes": names}, reason=reason, ended_at=time.time(),
                                failed_nodes=names):
        return False
    store.append_event(job.id, EventKind.ERROR, {"step": "observe", "nodes": names, "message": reason})
    for name in names:
        store.append_event(job.id, EventKind.NODE_FAILED, {"run": run.id, "node": name,
                                                           "message": f"node {name}: {faults[name]}"})
    tag = f"{job.id}/{run.id}"
    account = account_for(job.account)
    for node in nodes:
        if node.name in faults:
            continue
        try:
            if node is nodes[0] and run.pid:
                backend.signal_group(node, run.pid, signal.SIGKILL, account)
            backend.signal_tagged(node, tag, signal.SIGKILL, account)
        except BackendError:
            pass  # this one went silent too; the failure above already names the cause
    return True


def answering_nodes(store: JobStore, job_id: str, backend: ClusterBackend, nodes: list[Node],
                    step: str, timeout: float = PROBE_TIMEOUT) -> list[Node]:
    """The nodes that answer; each silent one is named in a warning event (its files and processes are
    out of reach, so the step goes on without it)."""
    faults = node_faults(backend, nodes, timeout)
    for name in sorted(faults):
        store.append_event(job_id, EventKind.WARNING, {"step": step, "node": name,
                                                       "message": f"{step}: skipped node {name}: {faults[name]}"})
    return [n for n in nodes if n.name not in faults]


def wants_recovery(job: Job, run: Run) -> bool:
    """A run failed by a node fault, of a job that asked to restart then, not yet handled; never a run
    being paused or frozen by its user (restarting it would undo what they asked for)."""
    return (run.state is RunState.FAILED and bool(run.failed_nodes) and not run.recovery
            and not run.stop_intent and not run.frozen_at
            and bool(((job.spec or {}).get("cluster") or {}).get("restart_on_node_failure")))


def restart_on_replacement(store: JobStore, settings: Settings, job_id: str, run_id: str,
                           backend: ClusterBackend) -> bool:
    """restart_on_node_failure: drain the run's silent nodes, lease a free node in place of each (or, for a
    plugin that runs on fewer nodes, go on without them), and make the run PENDING as its next attempt from
    its latest checkpoint. True when the caller should launch it; otherwise the run stays FAILED with why.
    Safe to repeat: the swap happens once, the restart is a compare-and-set."""
    job, run = store.get_job(job_id), store.get_run(job_id, run_id)
    if job.state is not JobState.UP or not wants_recovery(job, run):
        return False  # e.g. the job is terminating: a failed run is what terminate expects
    if type(backend).allocate is not ClusterBackend.allocate:
        return _give_up(store, job_id, run, f"the {backend.name} backend's allocation cannot take a replacement node")
    dead = run.failed_nodes
    plugin = registry().get(job.solver)
    note = {"reason": run.reason, "job": job_id, "run": run_id, "at": time.time()}
    swaps = store.replace_nodes(backend.name, job_id, dead, list(backend.inventory_names()), note,
                                allow_fewer=plugin.runs_on_fewer_nodes)
    if swaps == "nofree":
        return _give_up(store, job_id, run, "no replacement node free")
    for old, new in (swaps if isinstance(swaps, dict) else {}).items():
        message = f"node {old} replaced by {new}" if new else f"node {old} dropped: no replacement node free"
        store.append_event(job_id, EventKind.NODE_REPLACED, {"run": run_id, "node": old, "replacement": new,
                                                             "message": message})
    job = store.get_job(job_id)
    by_name = {n.name: n for n in backend.inventory()}
    try:
        for name in job.nodes:
            backend.prepare_node(by_name[name], job_id, account_for(job.account))
        started = next_attempt(store, settings.root, job, run, by="engine", cause="node fault")
    except (BackendError, InvalidState) as exc:
        return _give_up(store, job_id, run, exc.message)
    if started is None:
        return False
    store.append_event(job_id, EventKind.CONTROL, {"action": "restart", "by": "engine", "run": run_id,
                                                   "reason": f"node fault: {', '.join(dead)}", **started})
    return True


def _give_up(store: JobStore, job_id: str, run: Run, why: str) -> bool:
    """Leave the run FAILED, saying why it was not restarted (once: the marker stops further tries)."""
    reason = f"{run.reason}; not restarted: {why}"
    store.update_run(job_id, run.id, recovery=why, reason=reason)
    store.append_event(job_id, EventKind.WARNING, {"run": run.id, "message": f"not restarted: {why}"})
    return False


def note_leftovers(store: JobStore, job: Job, silent: list[str]) -> None:
    """Terminate goes on without silent nodes; remember them, because the run's processes may live on there
    (a cut link leaves them running): once released, the node would run that ghost beside its next job."""
    runs = [r.id for r in store.list_runs(job.id) if r.pid]
    if not silent or not runs or job.id in store.leftovers():
        return
    store.set_leftovers(job.id, {"backend": job.backend, "nodes": silent, "runs": runs, "next": time.time()})
    store.append_event(job.id, EventKind.WARNING, {
        "step": "terminate", "nodes": silent,
        "message": f"processes of this job may still run on {', '.join(silent)}: killed when it answers again"})


def kill_leftovers(store: JobStore, backend_named: Callable[[str], ClusterBackend],
                   timeout: float = PROBE_TIMEOUT) -> None:
    """For each terminated job with silent nodes noted, now and then: on every node that answers again, kill
    what is left of the job's runs, and say so; the nodes still silent stay noted."""
    for job_id, note in store.leftovers().items():
        if note["next"] > time.time():
            continue
        backend = backend_named(note["backend"])
        nodes = backend.nodes_named(note["nodes"])
        account = account_for(store.get_job(job_id).account)
        faults = node_faults(backend, nodes, timeout)
        for node in nodes:
            if node.name in faults:
                continue
            killed = 0
            for run_id in note["runs"]:
                run = store.get_run(job_id, run_id)
                signal_run(backend, [node], job_id, run, signal.SIGCONT, account)
                killed += signal_run(backend, [node], job_id, run, signal.SIGKILL, account)
            store.append_event(job_id, EventKind.WARNING, {
                "step": "cleanup", "node": node.name,
                "message": f"node {node.name} answers again: killed {killed} leftover processes of this job"})
        still = sorted(faults)
        store.set_leftovers(job_id, {**note, "nodes": still, "next": time.time() + LEFTOVER_RETRY} if still else None)
