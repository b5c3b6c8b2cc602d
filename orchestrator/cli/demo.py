"""`e2e demo`: the showcase job from a clean machine, live, then an explicit terminate.

Which job it runs is not the engine's business: examples/demo.yaml names the job spec and the inputs to copy
next to it (the engine knows no solver)."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from orchestrator.cli.watch import watch_job
from orchestrator.control.service import ControlService
from orchestrator.model.errors import StackError, UserError
from orchestrator.model.settings import get_settings
from orchestrator.model.states import JOB_TERMINAL
from orchestrator.worker.stack import Stack, restrict_umask

MANIFEST = "demo.yaml"
# Where examples/ is looked for: E2E_EXAMPLES, the source tree this package runs from, the current folder.
EXAMPLES_ENV = "E2E_EXAMPLES"


def examples_dirs() -> list[Path]:
    found = [Path(os.environ[EXAMPLES_ENV]).expanduser()] if os.environ.get(EXAMPLES_ENV) else []
    return found + [Path(__file__).resolve().parents[2] / "examples", Path.cwd() / "examples"]


@dataclass(frozen=True)
class Demo:
    """The showcase, as examples/demo.yaml describes it."""

    manifest: Path
    job: Path                   # the job spec
    inputs: dict[str, Path]     # name in the demo folder -> where it is copied from
    summary: str = ""
    missing: str = ""           # what to do when an input is missing
    timeout: float = 600


def find_demo(candidates: list[Path] | None = None) -> Demo:
    """Read the first demo.yaml among the examples folders; a clear error when there is none or it is bad."""
    candidates = examples_dirs() if candidates is None else candidates
    manifest = next((d / MANIFEST for d in candidates if (d / MANIFEST).is_file()), None)
    if manifest is None:
        looked = ", ".join(str(d / MANIFEST) for d in candidates)
        raise UserError(f"e2e demo needs examples/{MANIFEST} from the source tree; not found (looked at {looked}). "
                        f"Run it from a clone of the repository, or set {EXAMPLES_ENV} to its examples folder")
    try:
        data: Any = yaml.safe_load(manifest.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{manifest}: cannot read it: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("job"), str) \
            or not isinstance(data.get("inputs", {}), dict):
        raise UserError(f"{manifest}: needs `job:` (the job spec, relative to it) and `inputs:` (name: path)")
    base = manifest.parent
    job = base / data["job"]
    if not job.is_file():
        raise UserError(f"{manifest}: its job spec {str(job)!r} does not exist")
    inputs = {str(name): (base / str(src)).expanduser() for name, src in (data.get("inputs") or {}).items()}
    bad = [name for name in inputs if Path(name).name != name or name in (".", "..")]
    if bad:
        raise UserError(f"{manifest}: input names must be plain file or folder names, not {', '.join(bad)}")
    return Demo(manifest, job, inputs, str(data.get("summary") or ""), str(data.get("missing") or ""),
                float(data.get("timeout") or 600))


def prepare_case(demo: Demo, dest: Path) -> Path:
    """Copy the demo's inputs and its job spec into a fresh `dest`; returns the spec path there."""
    for name, src in demo.inputs.items():
        if not src.exists():
            hint = f": {demo.missing}" if demo.missing else ""
            raise StackError(f"the demo's input {name!r} is missing ({src}){hint}")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name, src in demo.inputs.items():
        if src.is_dir():
            shutil.copytree(src, dest / name)
        else:
            shutil.copy2(src, dest / name)
    spec = dest / demo.job.name
    shutil.copy(demo.job, spec)
    return spec


def run_demo(console: Console, keep_engine: bool = False) -> None:
    demo = find_demo()  # before starting anything: a missing examples/ folder is reported at once
    settings = get_settings()
    stack = Stack(settings)
    started_here = False
    if settings.redis_url is None and not all(stack.status().values() or [False]):
        console.print("starting the engine (embedded Redis, Celery worker, reconcile loop) ...")
        restrict_umask()
        stack.start()
        started_here = True
    t0 = time.monotonic()
    try:
        spec = prepare_case(demo, settings.root / "demo")
        console.print(f"job spec: {spec} (from {demo.manifest})")
        client = ControlService(settings)
        job_id = client.submit_file(spec)
        console.print(f"submitted [bold]{job_id}[/]" + (f": {demo.summary}" if demo.summary else ""))
        doc = watch_job(client, job_id, console, timeout=demo.timeout)
        run = next(r for r in doc.runs_detail if r.id == doc.current_run)
        console.print(f"run {run.id}: [bold]{run.state.value}[/] ({run.reason}); "
                      f"the cluster stays up until you terminate it. Terminating now ...")
        client.terminate(job_id)
        doc = client.wait(job_id, lambda d: d.state in JOB_TERMINAL, timeout=120)
        console.print(f"job {job_id} {doc.state.value} in {time.monotonic() - t0:.1f}s")
        if doc.results is None:  # the collect failed: the job says why
            console.print(f"no results collected: {doc.collect_error or doc.error or 'unknown reason'}")
            return
        results = Path(doc.results)
        run_dir = results / "runs" / run.id
        names = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) if run_dir.is_dir() else []
        console.print(f"results: [bold]{results}[/]")
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        console.print(f"  {run.id}: {shown or 'empty'}; solver log: {run_dir / (run.log_file or '')}",
                      highlight=False)
    finally:
        if started_here and not keep_engine:
            stack.stop()
            console.print("engine stopped")
