"""Live terminal view of a job: a progress bar, the latest residuals and state changes, from its events."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from orchestrator.control.protocol import Control, JobStatus
from orchestrator.model.events import EventKind
from orchestrator.model.states import JOB_TERMINAL, RUN_ENDED, JobState, RunState


def watch_job(client: Control, job_id: str, console: Console, quiet: bool = False,
              timeout: float | None = None) -> JobStatus:
    """Follow events until the current run ends (or the job does); returns the final job document."""
    doc = client.status(job_id)
    run_id = doc.current_run
    attempt = next(r.attempt or 1 for r in doc.runs_detail if r.id == run_id)
    launched = {"attempt": 0}  # the attempt whose launch the replay has reached

    def done(event) -> bool:
        state = event.data.get("state")
        if event.kind is EventKind.RUN_STATE and event.data.get("run") == run_id:
            if state == "LAUNCHING":
                launched["attempt"] = event.data.get("attempt") or 1
            # an earlier attempt's end (paused, then restarted) is history, not the end of this watch
            return RunState(state) in RUN_ENDED and launched["attempt"] >= attempt
        return event.kind is EventKind.JOB_STATE and (JobState(state) in JOB_TERMINAL or state == "FAILED")

    if quiet:
        for _ in client.follow(job_id, until=done, timeout=timeout):
            pass
        return client.status(job_id)
    columns = [TextColumn("[bold]{task.fields[run]}[/]"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
               TextColumn("{task.fields[step]}"), TimeElapsedColumn(), TextColumn("{task.fields[res]}")]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("run", total=1.0, run=run_id, step="", res="")
        for event in client.follow(job_id, until=done, timeout=timeout):
            if event.kind is EventKind.PROGRESS and event.data.get("run") == run_id:
                data = event.data
                step = f"step {data['step']:g}" + (f"/{data['total']:g}" if data.get("total") else "") \
                    if data.get("step") is not None else ""
                if data.get("converged"):
                    step += " converged"
                res = "  ".join(f"{k} {v:.2e}" for k, v in list(data.get("residuals", {}).items())[:4])
                bar.update(task, completed=event_fraction(data), step=step, res=res)
            elif event.kind in (EventKind.JOB_STATE, EventKind.RUN_STATE):
                who = event.data.get("run") or "job"
                extra = f" ({event.data['reason']})" if event.data.get("reason") else ""
                bar.console.print(f"{who}: {event.data['state']}{extra}")
                if event.data.get("run") == run_id and event.data["state"] == "COMPLETED":
                    bar.update(task, completed=1.0)
            elif event.kind is EventKind.CONTROL:
                data = event.data
                bar.console.print(f"[cyan]{data.get('action')}[/] by {data.get('by')}"
                                  + (f" ({data['reason']})" if data.get("reason") else ""))
            elif event.kind in (EventKind.WARNING, EventKind.ERROR, EventKind.NODE_FAILED, EventKind.NODE_REPLACED):
                bar.console.print(f"[yellow]{event.kind.value}:[/] {event.data.get('message')}")
            elif (line := sync_line(event)) is not None:
                bar.console.print(line, highlight=False)
    return client.status(job_id)


def event_fraction(data: dict[str, Any]) -> float:
    """The bar's fill for a progress event: 1.0 once converged (events recorded before `fraction` said so
    carry `converged` too), else the event's fraction."""
    if data.get("converged"):
        return 1.0
    return data.get("fraction") or 0.0


def sync_line(event) -> str | None:
    """One line for a sync event worth showing (per-pass totals, conflicts, refusals, process state)."""
    data = event.data
    if event.kind is EventKind.SYNC_STATS:
        lag = f", lag p50 {data['lag_p50']:.2f}s max {data['lag_max']:.2f}s" if data.get("lag_max") is not None else ""
        return (f"[blue]sync[/] {data.get('files', 0)} files, {data.get('bytes', 0):,} bytes, "
                f"{data.get('deleted', 0)} deleted, {data.get('conflicts', 0)} conflicts{lag}")
    if event.kind is EventKind.SYNC_CONFLICT:
        return (f"[magenta]sync conflict[/] {data.get('run')}/{data.get('path')!r}: both sides changed; "
                f"the desktop's version is kept as {data.get('desktop_copy')!r}")
    if event.kind is EventKind.SYNC_SKIP:
        return f"[yellow]sync skipped[/] {data.get('run')}/{data.get('path')!r}: {data.get('message')}"
    if event.kind is EventKind.SYNC_STATE:
        return f"[blue]sync[/] {data.get('state')}" + (f": {data['message']}" if data.get("message") else "")
    return None


def watch_series(client: Control, job_id: str, name: str | None, console: Console,
                 timeout: float | None = None, shown: int = 10) -> None:
    """`e2e watch JOB --series [NAME]`: without a name, list the current run's series with their latest
    point; with one, print its latest points, then each new point as it arrives, until the run ends."""
    doc = client.status(job_id)
    run_id = doc.current_run
    listing = client.series(job_id, run_id, [name] if name else None, last=1 if name is None else shown)
    if name is None:
        if not listing["names"]:
            console.print(f"{run_id}: no series yet (the solver has written no monitor file the plugin reads)")
        for each in listing["names"]:
            last = (listing["series"].get(each) or [[None, None]])[-1]
            console.print(f"{each:<40} {_point(last)}", highlight=False)
        return
    for point in listing["series"][name]:
        console.print(f"{name} {_point(point)}", highlight=False)
    last_x = listing["series"][name][-1][0] if listing["series"][name] else None

    attempt = next(r.attempt or 1 for r in doc.runs_detail if r.id == run_id)
    launched = {"attempt": 0}  # the attempt whose launch the replay has reached (as watch_job)

    def ended(event) -> bool:
        if event.kind is not EventKind.RUN_STATE or event.data.get("run") != run_id:
            return False
        if event.data["state"] == "LAUNCHING":
            launched["attempt"] = event.data.get("attempt") or 1
        return RunState(event.data["state"]) in RUN_ENDED and launched["attempt"] >= attempt

    for event in client.follow(job_id, until=ended, timeout=timeout):  # replayed points up to last_x are skipped
        if event.kind is EventKind.SERIES and event.data.get("run") == run_id:
            for batch in event.data.get("series", []):
                if batch.get("name") != name:
                    continue
                for point in batch.get("points", []):
                    if last_x is None or point[0] is None or point[0] > last_x:
                        console.print(f"{name} {_point(point)}", highlight=False)
        elif event.kind is EventKind.RUN_STATE and event.data.get("run") == run_id \
                and RunState(event.data["state"]) in RUN_ENDED and launched["attempt"] >= attempt:
            console.print(f"{run_id}: {event.data['state']}"
                          + (f" ({event.data['reason']})" if event.data.get("reason") else ""))


def _point(point: list) -> str:
    x, y = point
    return f"x={x:g}  {'nan' if y is None else format(y, '.6g')}" if x is not None else "-"
