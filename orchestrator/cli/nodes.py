"""`e2e nodes`: the cluster's nodes (lease, job, load, reachable) and `e2e nodes trust` for host keys."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from orchestrator.cli.common import JSON_OPT, _client, _dump, app, err, out
from orchestrator.control.service import ControlService
from orchestrator.model.errors import UserError
from orchestrator.model.settings import get_settings

nodes_app = typer.Typer(help="The cluster's nodes: leases, load, reachability; trusting host keys.",
                        invoke_without_command=True, no_args_is_help=False)
app.add_typer(nodes_app, name="nodes")


@nodes_app.callback()
def nodes(ctx: typer.Context,
          backend: Optional[str] = typer.Option(None, help="local or ssh; default ssh when E2E_INVENTORY is set"),
          as_json: bool = JSON_OPT) -> None:
    """Show every node: free or leased (to which job), its load average and whether it answers."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _client().nodes(backend)
    if as_json:
        _dump(rows)
        return
    table = Table("NODE", "ADDRESS", "CORES", "STATE", "JOB", "LOAD", "REACHABLE", box=None)
    for r in rows:
        table.add_row(r["name"], r["address"], str(r["cores"]), r["state"], r["job"] or "-",
                      f"{r['load']:.2f}" if r["load"] is not None else "-",
                      "yes" if r["reachable"] else f"[red]no[/] {r['problem']}")
    out.print(table)
    for r in rows:
        if r["drained"]:
            out.print(f"[yellow]{r['name']} drained[/] (job {r['drained'].get('job')}): {r['drained'].get('reason')}"
                      f"; `e2e nodes undrain {r['name']}` puts it back")


@nodes_app.command("undrain")
def undrain_node(node: str = typer.Argument(..., help="node name"),
                 backend: Optional[str] = typer.Option(None, help="local or ssh; default ssh with E2E_INVENTORY"),
                 force: bool = typer.Option(False, "--force", help="undrain even if the node does not answer"),
                 ) -> None:
    """Put a node drained after a fault back into service, once it answers again; leftover processes of
    the run that lost it are killed first, so they cannot compete with the next job."""
    killed, warning = _client().undrain(node, force, backend)
    if warning:
        err.print(f"[yellow]warning:[/] {warning}")
    out.print(f"node {node} undrained" + (f"; killed {killed} leftover process(es)" if killed else ""))


@nodes_app.command("drain")
def drain_node(node: str = typer.Argument(..., help="node name"),
               reason: str = typer.Option("", help="why (shown in `e2e nodes`)"),
               backend: Optional[str] = typer.Option(None, help="local or ssh; default ssh with E2E_INVENTORY"),
               ) -> None:
    """Take a node out of service: no new job gets it (a job holding it keeps it until the job ends)."""
    _client().drain(node, reason, backend)
    out.print(f"node {node} drained; `e2e nodes undrain {node}` puts it back")


@nodes_app.command("trust")
def trust_node(node: str = typer.Argument(..., help="node name from the inventory"),
               yes: bool = typer.Option(False, "--yes", help="trust without asking (after checking the fingerprint)"),
               replace: bool = typer.Option(False, "--replace", help="replace a different key already trusted"),
               ) -> None:
    """Show a node's host key fingerprint and, once confirmed, add it to the managed known_hosts."""
    control = ControlService(get_settings())  # the engine's inventory and known_hosts, never --server
    offer = control.host_key(node)
    out.print(f"node {offer.node} ({offer.entry}) presents {offer.type} {offer.fingerprint}")
    if offer.trusted:
        out.print(f"already trusted in {offer.known_hosts}")
        return
    if offer.others:
        err.print(f"[yellow]warning:[/] {offer.known_hosts} trusts a different key for {offer.entry}: "
                  f"{', '.join(offer.others)}")
        if not replace:
            raise UserError(f"not changed: pass --replace to trust the new key of node {offer.node}")
    if not yes and not typer.confirm("Compare it with `ssh-keygen -lf` on the node. Trust this key?"):
        raise UserError("not trusted: nothing changed")
    control.trust_host_key(offer, replace=replace)
    out.print(f"trusted: {offer.entry} {offer.type} {offer.fingerprint} added to {offer.known_hosts}")
