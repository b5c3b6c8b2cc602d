"""Node faults during a run: probe the job's nodes, fail the run naming the silent ones, stop the survivors."""

from __future__ import annotations

import signal
import time
from typing import Any

from .cluster.base import ClusterBackend, Node
from .cluster.ssh import PROBE_TIMEOUT, node_faults
from .errors import BackendError
from .events import EventKind
from .states import RunState
from .store import JobStore

# A fault counts only while solver processes may be on the nodes (a paused run has none to lose).
WATCHED = (RunState.RUNNING, RunState.FROZEN, RunState.STOPPING)


def fail_on_node_fault(store: JobStore, job: dict[str, Any], run: dict[str, Any], backend: ClusterBackend,
                       nodes: list[Node], timeout: float = PROBE_TIMEOUT) -> bool:
    """Probe every node of the job (in parallel, each within timeout); when any does not answer, mark the
    run FAILED with the nodes named, record an error event, and kill the run's processes on the nodes that
    still answer (MPI ranks would otherwise wait forever for the lost ones). True when the run failed."""
    if run["state"] not in WATCHED:
        return False
    faults = node_faults(backend, nodes, timeout)
    if not faults:
        return False
    names = sorted(faults)
    reason = f"node{'s' if len(names) > 1 else ''} {', '.join(names)} stopped answering: " + \
        "; ".join(faults[n] for n in names)
    if not store.transition_run(job["id"], run["id"], RunState.FAILED, expect=[run["state"]],
                                data={"reason": reason, "nodes": names}, reason=reason, ended_at=time.time(),
                                failed_nodes=names):
        return False
    store.append_event(job["id"], EventKind.ERROR, {"step": "observe", "nodes": names, "message": reason})
    tag = f"{job['id']}/{run['id']}"
    for node in nodes:
        if node.name in faults:
            continue
        try:
            if node is nodes[0] and run.get("pid"):
                backend.signal_group(node, run["pid"], signal.SIGKILL)
            backend.signal_tagged(node, tag, signal.SIGKILL)
        except BackendError:
            pass  # this one went silent too; the failure above already names the cause
    return True
