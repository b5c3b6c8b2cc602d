"""Acts on a live run across its nodes: freeze and thaw every process, graceful stop, escalation."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path, PurePosixPath

from orchestrator.cluster.base import ClusterBackend, Node, NodeUnreachable
from orchestrator.engine.faults import fault_point
from orchestrator.model.errors import E2EError, UserError
from orchestrator.model.events import EventKind
from orchestrator.model.identity import Account
from orchestrator.model.paths import RunPaths
from orchestrator.model.records import Run, Signals
from orchestrator.model.settings import Settings
from orchestrator.model.states import RunState
from orchestrator.store.jobs import JobStore
from orchestrator.sync.confine import confined
from solvers.base import SolverPlugin


class RunFilesOnNode:
    """A plugin's window onto a live run directory: relative paths only, routed through the backend."""

    def __init__(self, backend: ClusterBackend, node: Node, root: Path) -> None:
        self._backend, self._node, self._root = backend, node, root

    def _path(self, rel: str) -> Path:
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts:
            raise UserError(f"path {rel!r} must stay inside the run directory")
        if self._root.is_dir():  # the run directory is here (local backend, shared storage): no symlinked folder
            return confined(self._root, str(pure))
        return self._root / pure

    def read_text(self, rel: str) -> str:
        data = self._backend.read_bytes(self._node, self._path(rel))
        if data is None:
            raise FileNotFoundError(rel)
        return data.decode()

    def write_text(self, rel: str, text: str) -> None:
        self._backend.write_bytes(self._node, self._path(rel), text.encode())


def run_tag(job_id: str, run_id: str) -> str:
    return f"{job_id}/{run_id}"


def signal_run(backend: ClusterBackend, nodes: list[Node], job_id: str, run: Run, signum: int,
               account: Account | None = None) -> int:
    """Signal every process of the run: the wrapper's process group on the head node (wrapper, launcher,
    local ranks) and every tagged process on every node (remote ranks). Idempotent for STOP/CONT. Only the
    job account's processes are signalled: the pid and the tags are the job's to forge."""
    count = 0
    # The pid is a process group on the node the wrapper started on: nodes[0] only when that is still it
    # (a silent head is left out by the caller, and another node's group with that number is not ours).
    if run.pid and nodes and run.node in (None, nodes[0].name):
        try:
            count += int(backend.signal_group(nodes[0], run.pid, signum, account))
        except NodeUnreachable:
            pass  # silent: the node-fault check names it
    seen: set[str] = set()
    for node in nodes:
        if node.address in seen and backend.name == "local":
            continue  # virtual nodes share one machine: one scan finds every rank
        seen.add(node.address)
        try:
            count += backend.signal_tagged(node, run_tag(job_id, run.id), signum, account)
        except NodeUnreachable:
            continue  # a silent node (the node-fault check fails its run) cannot be signalled
    return count


class RunControl:
    """The node-side half of the control commands; the state change itself happened in the store."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store, self.settings = store, settings

    def freeze(self, backend: ClusterBackend, nodes: list[Node], job_id: str, run: Run,
               account: Account | None = None) -> None:
        """SIGSTOP every process of a FROZEN run (again, harmlessly, if it already was)."""
        if not backend.suspend(job_id):
            signal_run(backend, nodes, job_id, run, signal.SIGSTOP, account)
        self.store.update_run(job_id, run.id, signals=Signals.FROZEN)

    def thaw(self, backend: ClusterBackend, nodes: list[Node], job_id: str, run: Run,
             account: Account | None = None) -> None:
        """SIGCONT every process of the run (resume, or before a stop of a frozen run)."""
        if not backend.resume(job_id):
            signal_run(backend, nodes, job_id, run, signal.SIGCONT, account)
        self.store.update_run(job_id, run.id, signals=Signals.RUNNING)

    def stop(self, plugin: SolverPlugin, backend: ClusterBackend, nodes: list[Node], job_id: str,
             run: Run, run_root: Path, account: Account | None = None) -> None:
        """A STOPPING run: thaw it if frozen, then ask the solver to checkpoint and exit; SIGTERM the run
        when the plugin has no graceful way. Safe to repeat (the plugin's request is idempotent and the
        SIGTERM is sent once)."""
        if run.signals is Signals.FROZEN:
            self.thaw(backend, nodes, job_id, run, account)
        fault_point("control.before_stop")
        graceful = False
        try:
            graceful = plugin.request_stop(RunFilesOnNode(backend, nodes[0], run_root))
        except (OSError, E2EError) as exc:
            self.store.append_event(job_id, EventKind.WARNING,
                                    {"run": run.id, "message": f"graceful stop failed: {exc}"})
        if not graceful and self.store.set_run_once(job_id, run.id, "term_sent_at", time.time()):
            signal_run(backend, nodes, job_id, run, signal.SIGTERM, account)
        self.store.update_run(job_id, run.id, stop_sent_at=time.time())
        fault_point("control.after_stop")

    def escalate(self, backend: ClusterBackend, nodes: list[Node], job_id: str, run: Run,
                 account: Account | None = None) -> None:
        """A stop that takes too long: SIGTERM after stop_grace, SIGKILL after kill_grace more."""
        now = time.time()
        asked = run.stop_requested_at or now
        if run.term_sent_at is None and now - asked > self.settings.stop_grace:
            signal_run(backend, nodes, job_id, run, signal.SIGTERM, account)
            self.store.update_run(job_id, run.id, term_sent_at=now)
            self.store.append_event(job_id, EventKind.WARNING, {
                "run": run.id, "message": f"graceful stop took over {self.settings.stop_grace:.0f}s: sent SIGTERM"})
        elif run.term_sent_at and run.kill_sent_at is None and now - run.term_sent_at > self.settings.kill_grace:
            signal_run(backend, nodes, job_id, run, signal.SIGKILL, account)
            self.store.update_run(job_id, run.id, kill_sent_at=now)
            self.store.append_event(job_id, EventKind.WARNING, {"run": run.id, "message": "sent SIGKILL"})


def adopt_started(store: JobStore, job_id: str, run_id: str, backend: ClusterBackend, head: Node,
                  paths: RunPaths) -> bool:
    """LAUNCHING -> RUNNING once the wrapper has recorded its pid."""
    pid = backend.read_bytes(head, paths.pid)
    if not pid:
        return False
    started = backend.read_bytes(head, paths.started_at) or b""
    if store.transition_run(job_id, run_id, RunState.RUNNING, expect=[RunState.LAUNCHING],
                            data={"pid": int(pid)}, pid=int(pid), started_at=float(started or time.time())) \
            and backend.watchable_here:  # this host's watcher follows it from now on (engine/watcher.py)
        store.observation.announce(socket.gethostname(), job_id, run_id, paths.attempt, int(pid), str(paths.root))
    return True
