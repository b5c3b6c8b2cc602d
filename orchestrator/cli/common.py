"""What every `e2e` command module shares: the Typer app, consoles, the client, output helpers."""

from __future__ import annotations

import json
import time
from typing import Any

import typer
from rich.console import Console

from orchestrator.control.protocol import Control
from orchestrator.control.service import ControlService
from orchestrator.model.settings import get_settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="End-to-End Desktops: run simulation jobs on a cluster, follow them live, terminate them.")
out = Console()
err = Console(stderr=True)

JOB_ARG = typer.Argument(..., envvar="E2E_JOB", show_envvar=False,
                         help="job id (or a unique start of it); default $E2E_JOB (set in a job's desktop)")
JSON_OPT = typer.Option(False, "--json", help="print machine-readable JSON")


@app.callback()
def _global(server: str = typer.Option(None, "--server", envvar="E2E_SERVER", show_envvar=True,
                                       help="talk to this engine's REST API (URL) instead of its Redis"),
            token: str = typer.Option(None, "--token", envvar="E2E_TOKEN", show_envvar=True,
                                      help="API token for --server (better in E2E_TOKEN: not in shell history)"),
            ) -> None:
    """Options every command takes."""
    _remote.update(server=server, token=token)


_remote: dict[str, str | None] = {}


def _client() -> Control:
    """The engine's control surface: over its REST API with --server/E2E_SERVER, else in this process (on the
    engine's machine). Commands are written against the `Control` protocol only, whichever it is."""
    if _remote.get("server"):
        from orchestrator.control.remote import RemoteControl

        return RemoteControl(_remote["server"], _remote.get("token") or "")
    return ControlService(get_settings())


def _dump(data: Any) -> None:
    print(json.dumps(data, indent=2, default=lambda o: getattr(o, "value", None) or getattr(o, "model_dump", str)()))


def _job_doc(doc: Any) -> dict[str, Any]:
    """A job document (JobStatus, Job) as JSON data."""
    return doc.model_dump(mode="json")


def _percent(progress: Any) -> str:
    """A run's progress as a percentage ("100%" once converged, however few steps it took); "" if unknown."""
    frac = progress.fraction if progress is not None else None
    return f"{frac:.0%}" if frac is not None else ""


def _progress_line(progress: Any) -> str:
    """A run's progress for `e2e status`: percentage, step of total, and convergence."""
    if progress is None:
        return ""
    parts = [pct] if (pct := _percent(progress)) else []
    if progress.step is not None:
        parts.append(f"step {progress.step:g}" + (f"/{progress.total:g}" if progress.total else ""))
    if progress.converged:
        parts.append("converged")
    return "  ".join(parts)


def _state(value: str) -> str:
    colour = {"COMPLETED": "green", "UP": "green", "RUNNING": "cyan", "FAILED": "red", "TERMINATED": "dim",
              "STOPPED": "yellow", "TERMINATING": "yellow", "STOPPING": "yellow"}.get(value, "white")
    return f"[{colour}]{value}[/]"


def _age(ts: float) -> str:
    return _duration(time.time() - ts)


def _duration(secs: float) -> str:
    secs = max(0.0, secs)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs / size:.0f}{unit}"
    return f"{secs:.0f}s"
