"""The `e2e` command: start the engine, submit and follow jobs, terminate them, render specs dry."""

from __future__ import annotations

import re
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from orchestrator.cli.common import (
    JOB_ARG,
    JSON_OPT,
    _age,
    _client,
    _dump,
    _duration,
    _job_doc,
    _percent,
    _progress_line,
    _state,
    app,
    err,
    out,
)
from orchestrator.cli.watch import watch_job, watch_series
from orchestrator.control.protocol import run_finished
from orchestrator.model.errors import E2EError, InfrastructureError, UserError
from orchestrator.model.settings import get_settings
from orchestrator.model.states import JOB_TERMINAL
from orchestrator.store import StoreError
from orchestrator.worker.stack import Stack, restrict_umask


@app.command()
def up(detach: bool = typer.Option(False, "--detach", "-d", help="start in the background and return")) -> None:
    """Start the engine: Redis (embedded unless REDIS_URL is set), Celery workers and the reconcile loop."""
    restrict_umask()  # the engine's files (stack.json, logs) are the engine account's only
    stack = Stack(get_settings())
    info = stack.start()
    where = "embedded Redis" if info["embedded_redis"] else "Redis from REDIS_URL"
    out.print(f"[green]engine up[/] in {stack.home} ({where}; worker pid {info['pids']['worker']}, "
              f"beat pid {info['pids']['beat']})")
    from orchestrator.cli.admin import _say_mode

    _say_mode()
    if detach:
        return
    out.print("press Ctrl-C to stop")
    stopping = False

    def _stop(*_a):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stopping:
        time.sleep(0.5)
        try:
            for name in stack.revive():  # supervise: a worker or beat that died on its own comes back
                err.print(f"[yellow]{name} had exited; restarted[/]")
        except (E2EError, StoreError) as exc:
            err.print(f"[yellow]could not restart a stopped process yet: {exc}[/]")
    stack.stop()
    out.print("engine stopped")


@app.command()
def down() -> None:
    """Stop the engine's workers, reconcile loop and embedded Redis (jobs and their state are kept)."""
    stack = Stack(get_settings())
    if not stack.read():
        out.print("engine is not running")
        return
    stack.stop()
    out.print("engine stopped")


@app.command()
def submit(spec: Path = typer.Argument(..., help="job spec (YAML or JSON)"),
           wait: bool = typer.Option(False, "--wait", help="follow the run until it ends"),
           sweep: Optional[list[str]] = typer.Option(None, "--sweep", help="KEY=v1,v2,...: one job per value "
                                                     "(repeatable: every combination); see also `sweep:` in the spec. "
                                                     "Members free their nodes 30s after their run ends "
                                                     "unless limits.idle_shutdown says otherwise"),
           as_json: bool = JSON_OPT) -> None:
    """Validate a job spec and queue it; prints the job id (or a sweep's id and its jobs)."""
    from orchestrator.control.sweeps import SweepPlan, read_submission

    # parsed once, before connecting: a bad spec (or any bad member of a sweep) is reported even with no
    # engine running, and nothing is created
    parsed = read_submission(spec, sweep or [])
    if isinstance(parsed, SweepPlan):
        from orchestrator.cli.sweeps import submit_sweep
        return submit_sweep(parsed, wait, as_json)
    client = _client()
    job_id = client.submit(parsed)
    if as_json and not wait:
        _dump({"id": job_id})
    elif not wait:
        print(job_id)
    if wait:
        if not as_json:
            out.print(f"submitted [bold]{job_id}[/]")
        doc = watch_job(client, job_id, out, quiet=as_json)
        if as_json:
            _dump(_job_doc(doc))


@app.command("ls")
def list_jobs(limit: int = typer.Option(50, help="how many of the newest jobs"), as_json: bool = JSON_OPT) -> None:
    """List jobs, newest first."""
    client = _client()
    jobs = client.overview(limit)
    if as_json:
        _dump([_job_doc(job) for job in jobs])
        return
    table = Table("ID", "NAME", "OWNER", "SOLVER", "JOB", "RUN", "PROGRESS", "AGE", box=None)
    for job in jobs:
        run = job.run
        state = job.state.value + (f" {_expected(job.queue, short=True)}" if job.queue else "")
        table.add_row(job.id, job.name, job.owner, job.solver, state,
                      f"{run.id if run else job.current_run} {run.state.value if run and run.state else '-'}",
                      _percent(run.progress if run else None), _age(job.created_at))
    out.print(table)


def _expected(place, short: bool = False) -> str:
    """A waiting job's place and expected start: '#2 in the queue; expected start ~4m (10:32): why' (short:
    '#2 ~4m'; '#2 ?' without an estimate; 'scheduler' in place of '#2' when the site's scheduler holds it)."""
    where = f"#{place.position}" if place.position is not None else "scheduler"
    if place.expected_start is None:
        return f"{where} ?" if short else f"{where} in the queue; no estimate: {place.why}"
    wait = max(0.0, place.expected_start - time.time())
    when = "now" if wait < 1 else f"~{_duration(wait)}"
    if short:
        return f"{where} {when}"
    at = time.strftime("%H:%M", time.localtime(place.expected_start))
    return f"{where} in the queue; expected start {when} ({at}): {place.why}"


@app.command()
def status(job: str = JOB_ARG, as_json: bool = JSON_OPT) -> None:
    """Show a job: state, nodes, runs with their progress, results."""
    client = _client()
    doc = client.status(job)
    if as_json:
        _dump(_job_doc(doc))
        return
    out.print(f"[bold]{doc.id}[/] {doc.name}  solver {doc.solver}  owner {doc.owner}")
    out.print(f"  job      {_state(doc.state.value)}  nodes {', '.join(doc.nodes) or '-'}")
    if doc.queue:
        out.print(f"  queue    {_expected(doc.queue)}", highlight=False)
    if doc.desktop:
        desk = doc.desktop
        detail = desk.url or desk.reason or ""
        out.print(f"  desktop  {desk.state or '-'}  {detail}  (e2e desktop {doc.id})", highlight=False)
    for run in doc.runs_detail:
        prog = run.progress
        line = f"  {run.id}  {_state(run.state.value)}"
        if (run.attempt or 1) > 1:
            line += f"  attempt {run.attempt}"
        if progress := _progress_line(prog):
            line += f"  {progress}"
        if run.reason:
            line += f"  ({run.reason})"
        out.print(line)
    if (doc.revision or 1) > 1:
        out.print(f"  spec     revision {doc.revision} (e2e history {doc.id})")
    for limit, deadline in doc.deadlines.items():
        out.print(f"  {limit:<8} ends the job in {_duration(deadline - time.time())}")
    if doc.allowed:
        out.print(f"  commands {', '.join(doc.allowed)}")
    if doc.results:
        out.print(f"  results  {doc.results}")


@app.command()
def watch(job: str = JOB_ARG,
          name: Optional[str] = typer.Argument(None, help="with --series: the series to follow, e.g. fc/Cd"),
          series: bool = typer.Option(False, "--series", help="follow one monitored series (its latest points as "
                                                             "they arrive); without a NAME, list the series")) -> None:
    """Follow a job live (progress, residuals, state) until its current run ends."""
    client = _client()
    if name is not None and not series:
        raise UserError(f"{name!r}: to follow a series, say --series {name}")
    if series:
        watch_series(client, client.resolve(job), name, out)
        return
    watch_job(client, client.resolve(job), out)


@app.command()
def logs(job: str = JOB_ARG, follow: bool = typer.Option(False, "-f", "--follow", help="keep printing new lines"),
         run: Optional[str] = typer.Option(None, help="run id, default the current run"),
         step: Optional[str] = typer.Option(None, "--step", help="a pre-processing step's log instead of the "
                                                                  "solver's, e.g. setFields (setFields.2 for the "
                                                                  "second setFields)")) -> None:
    """Print the solver log of the job's current (or given) run, or the log of one of its steps."""
    client = _client()
    offset = 0
    while True:
        chunk, offset = client.read_log(job, run, offset, step=step)
        if chunk:
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
            continue
        if not follow or run_finished(client.status(job)):
            chunk, offset = client.read_log(job, run, offset, step=step)  # what was written before it ended
            sys.stdout.write(chunk.decode(errors="replace"))
            return
        time.sleep(0.5)


@app.command()
def terminate(job: Optional[str] = typer.Argument(None, envvar="E2E_JOB",
                                                 help="job id (or a unique start of it); default $E2E_JOB"),
              wait: bool = typer.Option(False, "--wait", help="wait until TERMINATED"),
              timeout: float = typer.Option(300, help="seconds to wait with --wait"),
              sweep: Optional[str] = typer.Option(None, "--sweep", help="terminate every job of this sweep"),
              as_json: bool = JSON_OPT) -> None:
    """Stop the solver (gracefully first), copy the job's files to results, release the nodes."""
    if (job is None) == (sweep is None):
        raise UserError("give either a job id or --sweep SWEEP_ID")
    if sweep is not None:
        from orchestrator.cli.sweeps import terminate_sweep
        return terminate_sweep(sweep, wait, timeout, as_json)
    client = _client()
    doc = client.terminate(job)
    if wait:
        doc = client.wait(doc.id, lambda d: d.state in JOB_TERMINAL, timeout=timeout)
    if as_json:
        _dump(_job_doc(client.status(doc.id)))
        return
    out.print(f"{doc.id} {_state(doc.state.value)}" + (f"  results in {doc.results}" if doc.results else ""))


@app.command()
def solvers(as_json: bool = JSON_OPT) -> None:
    """List the installed solver plugins."""
    from solvers.base import registry

    reg = registry()
    rows = [{"name": p.name, "summary": p.summary, "options": sorted(p.Options.model_fields)} for p in reg]
    if as_json:
        for row, plugin in zip(rows, reg, strict=False):  # the full options schema, for plugin authors and tooling
            row["schema"] = plugin.Options.model_json_schema()
        _dump({"solvers": rows, "broken": reg.broken})
        return
    table = Table("SOLVER", "OPTIONS", "WHAT", box=None)
    for row in rows:
        table.add_row(row["name"], ", ".join(o for o in row["options"] if o != "name"), row["summary"])
    out.print(table)
    for name, why in reg.broken.items():
        err.print(f"[yellow]plugin {name} failed to load:[/] {why}")


@app.command()
def render(spec: Path, out_dir: Path = typer.Option(..., "--out", help="folder to write the rendered run into"),
           hosts: str | None = typer.Option(None, "--hosts", help="render for these hosts (h1,h2,h3), each with "
                                            "the spec's cores_per_node, instead of the allocation"),
           ) -> None:
    """Dry run: write every file a run would get (inputs, hostfile, run.sh, wrapper.sh); start nothing."""
    from orchestrator.control.service import ControlService

    rendered = ControlService(get_settings()).render(spec, out_dir, hosts)  # on this machine, never --server
    for rel in rendered.files[:50]:
        out.print(f"  {rel}")
    out.print(f"  {rendered.wrapper} (the engine's wrapper)")
    out.print(f"rendered into {rendered.root}; the solver log would be {rendered.log_file}")
    for key, note in rendered.info.items():  # what the plugin says of this run (e.g. no pause/restart)
        out.print(f"note ({key}): {note}", markup=False)


@app.command()
def demo(keep: bool = typer.Option(False, "--keep", help="leave the engine running afterwards")) -> None:
    """Run the showcase job of examples/demo.yaml live (starting the engine if needed), then terminate it."""
    from orchestrator.cli.demo import run_demo

    run_demo(out, keep_engine=keep)


# Each area's commands live in their own module and add themselves to `app` when imported.
from orchestrator.cli import (  # noqa: E402  (after `app` exists: each module adds its commands to it)
    admin,  # noqa: F401  (serve, admin users and tokens)
    control,  # noqa: F401  (pause, resume, edit, restart, rerun, history)
    desktop,  # noqa: F401  (desktop, keys, access)
    files,  # noqa: F401  (files, download)
    nodes,  # noqa: F401  (nodes, nodes trust)
    notify,  # noqa: F401  (notify add-webhook, add-email, ls, rm, test, secret, log)
    sweeps,  # noqa: F401  (sweep ls, sweep status)
    uploads,  # noqa: F401  (uploads ls, uploads rm)
)


def main() -> None:
    """Entry point: user errors print one clear message (exit 2), infrastructure errors exit 3; a usage error
    (unknown command or option, a missing or malformed value) prints one line and a usage hint (exit 2)."""
    try:
        app(prog_name="e2e", standalone_mode=False)
    except E2EError as exc:
        err.print(f"[red]error:[/] {exc.message}", highlight=False)
        sys.exit(3 if isinstance(exc, InfrastructureError) else 2)
    except StoreError as exc:
        err.print(f"[red]error:[/] cannot reach the engine's Redis ({type(exc).__name__}); is it up? "
                  "(`e2e up --detach`)", highlight=False)
        sys.exit(3)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except _usage_errors() as exc:
        sys.exit(_usage_error(exc))


def _usage_errors() -> tuple[type[BaseException], ...]:
    """The command-line parser's exception classes: Typer's own copy of Click, and Click (older Typer)."""
    classes: list[type[BaseException]] = []
    try:
        from typer._click.exceptions import ClickException as TyperClickException
        classes.append(TyperClickException)
    except ImportError:
        pass
    try:
        from click import ClickException
        classes.append(ClickException)
    except ImportError:
        pass
    return tuple(classes)


def _usage_error(exc: BaseException) -> int:
    """Print a parser error as `e2e CMD: what is wrong` and one usage line; returns the exit code (2)."""
    import difflib

    ctx = getattr(exc, "ctx", None) or _deepest_context()
    kind = type(exc).__name__
    if kind == "NoArgsIsHelpError":  # `e2e` or a command group alone: its help is the answer
        if text := exc.format_message().strip():  # type: ignore[attr-defined]  (Typer prints rich help itself)
            sys.stderr.write(text + "\n")
        return 2
    text = " ".join(str(exc.format_message() if hasattr(exc, "format_message") else exc).split())
    if (unknown := re.match(r"No such command '(.*?)'", text)) and ctx is not None:
        name = unknown.group(1)
        close = difflib.get_close_matches(name, ctx.command.list_commands(ctx), n=3, cutoff=0.6)
        text = f"no such command {name!r}" + _did_you_mean(close)
    elif kind == "NoSuchOption" and ctx is not None:
        name = getattr(exc, "option_name", "")
        close = list(getattr(exc, "possibilities", None) or []) or difflib.get_close_matches(
            name, [o for p in ctx.command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")],
            n=3, cutoff=0.6)
        text = f"no such option {name!r}" + _did_you_mean(sorted(close))
        parent = ctx.parent
        while parent is not None and not close:  # an option of an outer level given after the command
            if any(name in p.opts for p in parent.command.params):
                text += f" ({name} goes before the command: {parent.command_path} {name} ... {ctx.info_name} ...)"
                break
            parent = parent.parent
    else:
        text = text[:1].lower() + text[1:]
        text = text.removesuffix(".")
    path = ctx.command_path if ctx is not None else "e2e"
    usage = " ".join(ctx.get_usage().split()) if ctx is not None else "Usage: e2e [OPTIONS] COMMAND [ARGS]..."
    sys.stderr.write(f"{path}: {text}\n{usage}  (try '{path} --help')\n")
    return 2


def _did_you_mean(names: list[str]) -> str:
    if not names:
        return ""
    return " (did you mean " + " or ".join(repr(n) for n in names) + "?)"


def _deepest_context():
    """The context of the deepest command named on the command line (for errors raised without one)."""
    from typer.main import get_command

    cmd = get_command(app)
    ctx = cmd.make_context("e2e", [], resilient_parsing=True)
    for arg in sys.argv[1:]:
        sub = cmd.get_command(ctx, arg) if hasattr(cmd, "get_command") else None
        if sub is None:
            if not arg.startswith("-") and hasattr(cmd, "get_command"):
                break
            continue
        cmd = sub
        ctx = cmd.make_context(arg, [], parent=ctx, resilient_parsing=True)
    return ctx


if __name__ == "__main__":
    main()
