"""`e2e nodes`: the cluster's nodes (lease, job, load, reachable) and `e2e nodes trust` for host keys."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import typer
from rich.table import Table

from .cli_common import JSON_OPT, _client, _dump, app, err, out
from .cluster import get_backend
from .cluster.base import ClusterBackend, Node
from .errors import BackendError, UserError
from .settings import get_settings

nodes_app = typer.Typer(help="The cluster's nodes: leases, load, reachability; trusting host keys.",
                        invoke_without_command=True, no_args_is_help=False)
app.add_typer(nodes_app, name="nodes")

PROBE_TIMEOUT = 3.0


def _default_backend() -> str:
    return "ssh" if get_settings().inventory else "local"


def node_rows(backend: ClusterBackend, leases: dict[str, str]) -> list[dict[str, Any]]:
    """One row per node: name, address, cores, state (free/leased), job, load, reachable, problem."""
    def row(node: Node) -> dict[str, Any]:
        load, problem = None, None
        try:
            load = backend.load(node, PROBE_TIMEOUT)[0] if hasattr(backend, "load") else os.getloadavg()[0]
        except BackendError as exc:
            problem = exc.message
        job = leases.get(node.name) or None  # the pool stores free nodes with an empty job
        return {"name": node.name, "address": node.address, "cores": node.cores,
                "state": "leased" if job else "free", "job": job, "load": load,
                "reachable": problem is None, "problem": problem}
    nodes = backend.inventory()
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(nodes)))) as pool:
        return list(pool.map(row, nodes))


@nodes_app.callback()
def nodes(ctx: typer.Context,
          backend: Optional[str] = typer.Option(None, help="local or ssh; default ssh when E2E_INVENTORY is set"),
          as_json: bool = JSON_OPT) -> None:
    """Show every node: free or leased (to which job), its load average and whether it answers."""
    if ctx.invoked_subcommand is not None:
        return
    chosen = get_backend(backend or _default_backend(), get_settings())
    rows = node_rows(chosen, _client().store.leases(chosen.name))
    if as_json:
        _dump(rows)
        return
    table = Table("NODE", "ADDRESS", "CORES", "STATE", "JOB", "LOAD", "REACHABLE", box=None)
    for r in rows:
        table.add_row(r["name"], r["address"], str(r["cores"]), r["state"], r["job"] or "-",
                      f"{r['load']:.2f}" if r["load"] is not None else "-",
                      "yes" if r["reachable"] else f"[red]no[/] {r['problem']}")
    out.print(table)


@nodes_app.command("trust")
def trust_node(node: str = typer.Argument(..., help="node name from the inventory"),
               yes: bool = typer.Option(False, "--yes", help="trust without asking (after checking the fingerprint)"),
               replace: bool = typer.Option(False, "--replace", help="replace a different key already trusted"),
               ) -> None:
    """Show a node's host key fingerprint and, once confirmed, add it to the managed known_hosts."""
    from .cluster.hostkeys import fingerprint, host_entry, trust, trusted_keys
    from .cluster.sshconn import fetch_host_key
    from .cluster.ssh import SSHBackend

    backend = SSHBackend(get_settings())
    try:
        spec = backend.spec(node)
    except BackendError:
        raise UserError(f"node {node!r} is not in the inventory; known nodes: "
                        f"{', '.join(n.name for n in backend.config.nodes)}") from None
    known_hosts = backend.config.known_hosts
    key = fetch_host_key(spec, backend.config.connect_timeout)
    entry = host_entry(spec.address, spec.port)
    out.print(f"node {spec.name} ({entry}) presents {key.get_name()} {fingerprint(key)}")
    current = trusted_keys(known_hosts, spec.address, spec.port)
    if current.get(key.get_name()) == key:
        out.print(f"already trusted in {known_hosts}")
        return
    if current:
        listed = ", ".join(f"{t} {fingerprint(k)}" for t, k in current.items())
        err.print(f"[yellow]warning:[/] {known_hosts} trusts a different key for {entry}: {listed}")
        if not replace:
            raise UserError(f"not changed: pass --replace to trust the new key of node {spec.name}")
    if not yes and not typer.confirm("Compare it with `ssh-keygen -lf` on the node. Trust this key?"):
        raise UserError("not trusted: nothing changed")
    trust(known_hosts, spec.address, spec.port, key, replace=replace)
    out.print(f"trusted: {entry} {key.get_name()} {fingerprint(key)} added to {known_hosts}")
