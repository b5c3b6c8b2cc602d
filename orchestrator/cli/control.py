"""`e2e` commands that steer a job's runs: pause, resume, edit, restart, rerun, history."""

from __future__ import annotations

import time
from typing import Optional

import typer
from rich.table import Table

from orchestrator.cli.common import JOB_ARG, JSON_OPT, _client, _dump, _job_doc, _state, app, out
from orchestrator.control.protocol import Control, JobStatus
from orchestrator.model.errors import SpecError
from orchestrator.model.states import RUN_ENDED, RunState


def _report(doc: JobStatus, verb: str) -> None:
    run = doc.current
    out.print(f"{doc.id} {verb}: {run.id} {_state(run.state.value)}"
              + (f" (attempt {run.attempt or 1})" if (run.attempt or 1) > 1 else ""))


def _wait_run(client: Control, job_id: str, states: set[RunState], timeout: float) -> JobStatus:
    def reached(doc: JobStatus) -> bool:
        return doc.current.state in states
    return client.wait(job_id, reached, timeout=timeout)


WAIT_OPT = typer.Option(False, "--wait", help="wait until the command has taken effect")
TIMEOUT_OPT = typer.Option(300.0, help="seconds to wait with --wait")


@app.command()
def pause(job: str = JOB_ARG,
          freeze: bool = typer.Option(False, "--freeze", help="suspend every process at once (no checkpoint); "
                                                              "`e2e resume` continues"),
          wait: bool = WAIT_OPT, timeout: float = TIMEOUT_OPT, as_json: bool = JSON_OPT) -> None:
    """Pause the current run: the solver writes a checkpoint and exits; the cluster stays up."""
    client = _client()
    doc = client.pause(job, freeze=freeze)
    if wait and not freeze:
        doc = _wait_run(client, doc.id, set(RUN_ENDED), timeout)
    _dump(_job_doc(doc)) if as_json else _report(doc, "frozen" if freeze else "pause requested")


@app.command()
def resume(job: str = JOB_ARG, as_json: bool = JSON_OPT) -> None:
    """Continue a run suspended with `pause --freeze`."""
    doc = _client().resume(job)
    _dump(_job_doc(doc)) if as_json else _report(doc, "resumed")


def _launch(job: str, start: str, verb: str, wait: bool, timeout: float, as_json: bool) -> None:
    """restart/rerun: start the next attempt or run, optionally wait until it runs (or already ended)."""
    client = _client()
    doc = client.restart(job) if start == "restart" else client.rerun(job)
    if wait:
        doc = _wait_run(client, doc.id, {RunState.RUNNING} | set(RUN_ENDED), timeout)
    _dump(_job_doc(doc)) if as_json else _report(doc, verb)


@app.command()
def restart(job: str = JOB_ARG, wait: bool = WAIT_OPT, timeout: float = TIMEOUT_OPT, as_json: bool = JSON_OPT) -> None:
    """Continue the current run from its latest checkpoint, with the edits made so far."""
    _launch(job, "restart", "restarted", wait, timeout, as_json)


@app.command()
def rerun(job: str = JOB_ARG, wait: bool = WAIT_OPT, timeout: float = TIMEOUT_OPT, as_json: bool = JSON_OPT) -> None:
    """Start a new run from the original inputs plus the edits; earlier runs' results are kept."""
    _launch(job, "rerun", "rerun started", wait, timeout, as_json)


@app.command()
def edit(job: str = JOB_ARG,
         set_: Optional[list[str]] = typer.Option(None, "--set", help="KEY=VALUE, e.g. parameters.endTime=0.5 "
                                                                      "or limits.walltime=2h (repeatable)"),
         file: Optional[list[str]] = typer.Option(None, "--file", help="LOCAL=RELPATH: replace an input file "
                                                                       "of the case (repeatable)"),
         live: bool = typer.Option(False, "--live", help="apply to the running solver too (its solver plugin "
                                                          "decides which edits it can apply live)"),
         message: str = typer.Option("", "-m", "--message", help="why; kept in the history"),
         as_json: bool = JSON_OPT) -> None:
    """Change solver parameters and/or input files; applies at the next restart or rerun (or now, --live)."""
    files = {}
    for item in file or []:
        local, sep, rel = item.partition("=")
        if not sep or not local or not rel:
            raise SpecError([("--file", f"{item!r} is not LOCAL=RELPATH")])
        files[local] = rel
    result = _client().edit(job, sets=set_ or [], files=files, live=live, message=message)
    if as_json:
        _dump(result)
        return
    out.print(f"revision {result['revision']} recorded" + (" and applied live" if live else ""))
    for change in result["changes"]:
        out.print(f"  {change['field']}: {change['old']!r} -> {change['new']!r}")
    for rel in result["files"]:
        out.print(f"  file {rel}")


@app.command()
def history(job: str, as_json: bool = JSON_OPT) -> None:
    """Show the job's spec revisions (who, when, what changed) and its runs."""
    doc = _client().history(job)
    if as_json:
        _dump(doc.model_dump(mode="json"))
        return
    table = Table("REV", "WHEN", "BY", "CHANGES", box=None)
    for rev in doc.revisions:
        what = [f"{c['field']}={c['new']}" for c in rev.get("changes", [])]
        what += [f"file {f}" for f in rev.get("files", [])]
        if rev.get("live"):
            what.append("(live)")
        table.add_row(str(rev["revision"]), time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rev["at"])),
                      rev.get("by", ""), ", ".join(what) or rev.get("message", ""))
    out.print(table)
    runs = Table("RUN", "STATE", "ATTEMPT", "REVISION", "REASON", box=None)
    for run in doc.runs:
        runs.add_row(run.id, _state(run.state.value), str(run.attempt or 1), str(run.revision or 1),
                     run.reason or "")
    out.print(runs)
