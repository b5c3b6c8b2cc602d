"""`e2e sweep ls|status` and the sweep halves of `e2e submit --sweep` and `e2e terminate --sweep`."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from orchestrator.cli.common import JSON_OPT, _age, _client, _dump, _state, app, out
from orchestrator.control.protocol import run_finished
from orchestrator.control.sweeps import SweepPlan, summary
from orchestrator.model.states import JOB_TERMINAL

sweep_app = typer.Typer(help="Parameter sweeps: one job per combination of swept values.", no_args_is_help=True)
app.add_typer(sweep_app, name="sweep")


def _values(values: dict) -> str:
    return "  ".join(f"{k.removeprefix('solver.')}={v}" for k, v in values.items())


def submit_sweep(plan: SweepPlan, wait: bool, as_json: bool) -> None:
    """Queue the sweep's members; with wait, until every member's run has ended."""
    client = _client()
    sweep_id, job_ids = client.submit_sweep(plan)
    if wait:
        for job_id in job_ids:
            client.wait(job_id, run_finished, timeout=24 * 3600, poll=1.0)
    if as_json:
        members = {"members": client.sweep_status(sweep_id)[1]} if wait else {}
        _dump({"sweep": sweep_id, "jobs": job_ids, **members})
        return
    out.print(f"sweep [bold]{sweep_id}[/]: {len(job_ids)} jobs ({' x '.join(str(len(v)) for v in plan.axes.values())} "
              f"over {', '.join(k.removeprefix('solver.') for k in plan.axes)})")
    for member, job_id in zip(plan.members, job_ids, strict=False):
        out.print(f"  {job_id}  {member.spec.name}  {_values(member.values)}")
    if wait:
        _print_members(client.sweep_status(sweep_id)[1])


def terminate_sweep(sweep: str, wait: bool, timeout: float, as_json: bool) -> None:
    client = _client()
    sweep_id, docs = client.terminate_sweep(sweep)
    if wait:
        deadline = time.monotonic() + timeout
        for doc in docs:
            client.wait(doc.id, lambda d: d.state in JOB_TERMINAL, timeout=max(1.0, deadline - time.monotonic()))
    _, rows = client.sweep_status(sweep_id)
    if as_json:
        _dump({"sweep": sweep_id, "members": rows})
        return
    out.print(f"sweep {sweep_id}: {summary(rows)}")


def _print_members(rows: list[dict]) -> None:
    table = Table("#", "JOB", "NAME", "VALUES", "JOB", "RUN", "PROGRESS", "NODES", box=None)
    for r in rows:
        table.add_row(str(r["index"]), r["id"], r["name"], _values(r["values"]), _state(r["state"]),
                      f"{r['run']} {_state(r['run_state'])}",
                      f"{r['progress']:.0%}" if r["progress"] is not None else "", ", ".join(r["nodes"]) or "-")
    out.print(table)


@sweep_app.command("ls")
def list_sweeps(limit: int = typer.Option(50, help="how many of the newest sweeps"), as_json: bool = JSON_OPT) -> None:
    """List sweeps, newest first, with how their members stand."""
    found = _client().sweeps(limit)
    if as_json:
        _dump(found)
        return
    table = Table("SWEEP", "NAME", "MEMBERS", "STATES", "AGE", box=None)
    for s in found:
        table.add_row(s["sweep"], s["name"], str(s["members"]), s["summary"],
                      _age(s["created_at"]) if s["created_at"] else "")
    out.print(table)


@sweep_app.command("status")
def sweep_status(sweep: str = typer.Argument(..., help="sweep id (or a unique start of it)"),
                 as_json: bool = JSON_OPT) -> None:
    """Show every member of a sweep: its values, job and run state, progress and nodes."""
    sweep_id, rows = _client().sweep_status(sweep)
    if as_json:
        _dump({"sweep": sweep_id, "members": rows})
        return
    out.print(f"[bold]{sweep_id}[/]  {summary(rows)}")
    _print_members(rows)
