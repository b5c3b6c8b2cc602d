"""Node administration shared by `e2e nodes` and the API: one row per node, drain and undrain."""

from __future__ import annotations

import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from orchestrator.cluster import get_backend
from orchestrator.cluster.base import ClusterBackend, Node
from orchestrator.cluster.identity import account_for
from orchestrator.model.errors import BackendError, E2EError, UserError
from orchestrator.model.settings import Settings
from orchestrator.model.states import NodeState
from orchestrator.store.jobs import JobStore

PROBE_TIMEOUT = 3.0
log = logging.getLogger(__name__)


def node_state(job: str | None, drained: dict[str, Any] | None) -> NodeState:
    """A drain wins over a lease (a drained node keeps its job until it ends, but takes no new one)."""
    return NodeState.DRAINED if drained else NodeState.LEASED if job else NodeState.FREE


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
        state = node_state(job, note)
        return {"name": node.name, "address": node.address, "cores": node.cores, "state": state, "job": job,
                "load": load, "reachable": problem is None, "problem": problem, "drained": note}
    nodes = backend.inventory()
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(nodes)))) as pool:
        return list(pool.map(row, nodes))


def engine_default(settings: Settings) -> str:
    """The backend a spec without `cluster.backend` runs on, by the engine's settings."""
    return "ssh" if settings.inventory else "local"


def configured(store: JobStore, settings: Settings) -> list[str]:
    """The backends this engine serves: local always; ssh with an inventory; Slurm with a partition set or
    once a job has used it (no sinfo call on an engine that has no Slurm)."""
    names = ["local"]
    if settings.inventory:
        names.append("ssh")
    if settings.slurm_partition or store.leases("slurm"):
        names.append("slurm")
    return names


def publish_inventories(store: JobStore, settings: Settings) -> dict[str, int]:
    """A worker's view of each configured backend's nodes (name, address, cores, load, reachability), published
    so that `e2e nodes`, the API and the monitor show the engine's inventory, not one recomputed from their own
    settings. Leases and drains are read live by the reader. {backend: nodes published}."""
    published = {}
    for name in configured(store, settings):
        try:
            backend = get_backend(name, settings)
            rows = node_rows(backend, {}, {})
        except E2EError as exc:
            log.warning("cannot list the %s nodes: %s", name, exc.message)
            continue
        keep = ("name", "address", "cores", "load", "reachable", "problem")
        store.publish_inventory(name, {"at": time.time(), "default": engine_default(settings),
                                       "nodes": [{k: row[k] for k in keep} for row in rows]})
        published[name] = len(rows)
    return published


def published_rows(store: JobStore, backend: str) -> list[dict[str, Any]] | None:
    """node_rows from the engine's published inventory (None: nothing published yet), with live leases."""
    doc = store.published_inventory(backend)
    if doc is None:
        return None
    leases, drained = store.leases(backend), store.drained(backend)
    rows = []
    for node in doc.get("nodes", []):
        job, note = leases.get(node["name"]) or None, drained.get(node["name"])
        rows.append({**node, "state": node_state(job, note), "job": job, "drained": note, "seen_at": doc.get("at")})
    return rows


def _named(backend: ClusterBackend, node: str) -> Node:
    found = backend.nodes_named([node])
    if not found:
        raise UserError(f"node {node!r} is not in the {backend.name} inventory; known nodes: "
                        f"{', '.join(backend.inventory_names())}")
    return found[0]


def drain(store: JobStore, backend: str, known: list[str], node: str, by: str, reason: str) -> dict[str, Any]:
    """Take a node out of service: no new job gets it; a job holding it keeps it until it ends. `known`: the
    backend's node names."""
    if node not in known:
        raise UserError(f"node {node!r} is not in the {backend} inventory; known nodes: {', '.join(known)}")
    note = {"reason": reason or f"drained by {by}", "by": by, "at": time.time(), "job": None, "run": None}
    if not store.drain(backend, node, note):
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
