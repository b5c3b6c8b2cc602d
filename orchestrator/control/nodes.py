"""The cluster's nodes as users and admins see them: the listing, drain and undrain, SSH host keys, and the dry-run
render of a spec onto nodes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.model.errors import UserError

if TYPE_CHECKING:
    from orchestrator.control.service import ControlService

BACKENDS = ("local", "ssh", "slurm")
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")


@dataclass(frozen=True)
class Rendered:
    """What `render` wrote: the run folder, its files (relative), the wrapper's path, the solver log's name and
    the plugin's notes on the run (e.g. that pause/restart is unavailable for this input)."""

    root: Path
    files: list[str]
    wrapper: str
    log_file: str
    info: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HostKeyOffer:
    """The host key a node presents, and what the engine's known_hosts says of it."""

    node: str
    entry: str             # the known_hosts entry name ([address]:port)
    key: Any               # the presented key (a paramiko PKey), for trust_host_key
    type: str
    fingerprint: str
    known_hosts: Path
    trusted: bool          # already trusted
    others: list[str]      # other keys trusted for the entry now ("type fingerprint")


def backend_name(service: ControlService, name: str | None) -> str:
    """The named backend, by default the engine's (as its workers published it), else by these settings:
    ssh when an inventory is configured, local otherwise."""
    if name not in (None, *BACKENDS):
        raise UserError(f"backend {name!r}: choose local, ssh or slurm")
    if name:
        return name
    published = service.store.published_inventory("local")   # every engine publishes its local backend
    if published and published.get("default") in BACKENDS:
        return str(published["default"])
    return "ssh" if service.settings.inventory else "local"


def pick_backend(service: ControlService, name: str | None) -> Any:
    from orchestrator.cluster import get_backend

    return get_backend(backend_name(service, name), service.settings)


def nodes(service: ControlService, backend: str | None = None) -> list[dict[str, Any]]:
    """The engine's nodes (what its workers last published, with live leases and drains); before any worker
    has published, the nodes these settings describe."""
    from orchestrator.engine.nodes_admin import node_rows, published_rows

    name = backend_name(service, backend)
    rows = published_rows(service.store, name)
    if rows is None:
        chosen = pick_backend(service, name)
        rows = node_rows(chosen, service.store.leases(chosen.name), service.store.drained(chosen.name))
    if not service.admin:  # others' jobs and drain notes are theirs: only that they exist shows
        mine = {r.id for r in service.jobs(1000)}
        for row in rows:
            if row["job"] and row["job"] not in mine:
                row["job"] = "(another user's)"
            if row["drained"]:
                row["drained"] = {"reason": row["drained"].get("reason")}
    return rows


def drain(service: ControlService, node: str, reason: str = "", backend: str | None = None) -> dict[str, Any]:
    from orchestrator.engine import nodes_admin

    name = backend_name(service, backend)
    rows = nodes_admin.published_rows(service.store, name)
    known = [r["name"] for r in rows] if rows is not None else list(pick_backend(service, name).inventory_names())
    return nodes_admin.drain(service.store, name, known, node, service.user, reason)


def undrain(service: ControlService, node: str, force: bool = False,
            backend: str | None = None) -> tuple[int, str | None]:
    from orchestrator.engine import nodes_admin

    return nodes_admin.undrain(service.store, pick_backend(service, backend), node, force)


def host_key(service: ControlService, node: str) -> HostKeyOffer:
    from orchestrator.cluster.hostkeys import fingerprint, host_entry, trusted_keys
    from orchestrator.cluster.ssh import SSHBackend
    from orchestrator.cluster.sshconn import fetch_host_key
    from orchestrator.model.errors import BackendError

    ssh = SSHBackend(service.settings)
    try:
        spec = ssh.spec(node)
    except BackendError:
        raise UserError(f"node {node!r} is not in the inventory; known nodes: "
                        f"{', '.join(n.name for n in ssh.config.nodes)}") from None
    known_hosts = ssh.config.known_hosts
    if known_hosts is None:  # a parsed inventory always names one; a hand-built one may not
        raise UserError("the ssh inventory names no known_hosts file to trust a key into")
    key = fetch_host_key(spec, ssh.config.connect_timeout)
    current = trusted_keys(known_hosts, spec.address, spec.port)
    return HostKeyOffer(node=spec.name, entry=host_entry(spec.address, spec.port), key=key,
                        type=key.get_name(), fingerprint=fingerprint(key), known_hosts=known_hosts,
                        trusted=current.get(key.get_name()) == key,
                        others=[f"{t} {fingerprint(k)}" for t, k in current.items()])


def trust_host_key(service: ControlService, offer: HostKeyOffer, replace: bool = False) -> None:
    from orchestrator.cluster.hostkeys import trust
    from orchestrator.cluster.ssh import SSHBackend

    spec = SSHBackend(service.settings).spec(offer.node)
    trust(offer.known_hosts, spec.address, spec.port, offer.key, replace=replace)


def render(service: ControlService, spec_path: Path, out_dir: Path, hosts: str | None = None) -> Rendered:
    from orchestrator.cluster.base import Node
    from orchestrator.engine.materialize import materialize_run
    from orchestrator.model.paths import RunPaths
    from orchestrator.model.spec import load_spec
    from solvers.base import registry

    parsed = load_spec(spec_path)
    if hosts is not None:
        host_names = [h.strip() for h in hosts.split(",")]
        if not all(HOST_NAME.fullmatch(h) for h in host_names):
            raise UserError(f"--hosts {hosts!r}: give host names separated by commas, e.g. node1,node2,node3")
        chosen = [Node(h, h, parsed.cluster.cores_per_node, out_dir.resolve()) for h in host_names]
    else:
        chosen = pick_backend(service, parsed.cluster.backend).inventory()[: parsed.cluster.nodes]
    paths = RunPaths(out_dir.resolve())
    prepared = materialize_run(parsed, registry().get(parsed.solver.name), "dry-run", "run-001", chosen, paths)
    files = [str(p.relative_to(paths.root))
             for p in sorted(p for p in paths.root.rglob("*") if p.is_file() and ".e2e" not in p.parts)]
    return Rendered(paths.root, files, str(paths.relative(paths.wrapper)), prepared.log_file, dict(prepared.info))
