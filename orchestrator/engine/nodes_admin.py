"""Node administration shared by `e2e nodes` and the API: one row per node, drain and undrain."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from orchestrator.cluster.base import ClusterBackend, Node
from orchestrator.cluster.identity import account_for
from orchestrator.model.errors import BackendError, UserError
from orchestrator.model.states import NodeState
from orchestrator.store.jobs import JobStore

PROBE_TIMEOUT = 3.0


def node_rows(backend: ClusterBackend, leases: dict[str, str],
              drained: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per node: name, address, cores, state (free/leased/drained), job, load, reachable, problem,
    and for a drained node why (`drained`)."""
    drained = drained or {}

    def row(node: Node) -> dict[str, Any]:
        load, problem = None, None
        try:
            load = backend.load(node, PROBE_TIMEOUT)[0] if hasattr(backend, "load") else os.getloadavg()[0]
        except BackendError as exc:
            problem = exc.message
        job = leases.get(node.name) or None  # the pool stores free nodes with an empty job
        note = drained.get(node.name)
        state = NodeState.DRAINED if note else NodeState.LEASED if job else NodeState.FREE
        return {"name": node.name, "address": node.address, "cores": node.cores, "state": state, "job": job,
                "load": load, "reachable": problem is None, "problem": problem, "drained": note}
    nodes = backend.inventory()
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(nodes)))) as pool:
        return list(pool.map(row, nodes))


def _named(backend: ClusterBackend, node: str) -> Node:
    by_name = {n.name: n for n in backend.inventory()}
    if node not in by_name:
        raise UserError(f"node {node!r} is not in the {backend.name} inventory; known nodes: {', '.join(by_name)}")
    return by_name[node]


def drain(store: JobStore, backend: ClusterBackend, node: str, by: str, reason: str) -> dict[str, Any]:
    """Take a node out of service: no new job gets it; a job holding it keeps it until it ends."""
    _named(backend, node)
    note = {"reason": reason or f"drained by {by}", "by": by, "at": time.time(), "job": None, "run": None}
    if not store.drain(backend.name, node, note):
        raise UserError(f"node {node} is drained already")
    return note


def undrain(store: JobStore, backend: ClusterBackend, node: str, force: bool = False) -> tuple[int, str | None]:
    """Put a drained node back into service, once it answers again; leftover processes of the run that lost
    it are killed first, so they cannot compete with the next job. (killed, warning)."""
    named = _named(backend, node)
    note = store.drained(backend.name).get(node)
    if note is None:
        raise UserError(f"node {node} is not drained")
    killed, warning = 0, None
    if note.get("job"):
        try:
            job_id = str(note.get("job"))
            account = account_for(store.get_job(job_id).account)
            killed = backend.signal_tagged(named, f"{job_id}/{note.get('run')}", signal.SIGKILL, account)
        except BackendError as exc:
            if not force:
                raise UserError(f"node {node} still does not answer ({exc.message}); nothing changed "
                                "(--force undrains it anyway)") from None
            warning = f"node {node} does not answer: {exc.message}"
    store.undrain(backend.name, node)
    return killed, warning
