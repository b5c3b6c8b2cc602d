"""`e2e demo`: the showcase job from a clean machine: a real CFD case, live, then an explicit terminate."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rich.console import Console

from orchestrator.cli.watch import watch_job
from orchestrator.control.client import Client
from orchestrator.model.errors import StackError
from orchestrator.model.settings import get_settings
from orchestrator.model.states import JOB_TERMINAL
from orchestrator.worker.stack import Stack

TUTORIAL = Path("/usr/share/doc/openfoam-examples/examples/incompressible/simpleFoam/pitzDaily")
EXAMPLE_SPEC = Path(__file__).resolve().parent.parent / "examples" / "pitz.yaml"


def prepare_case(dest: Path) -> Path:
    """Copy the pitzDaily tutorial next to a copy of examples/pitz.yaml; returns the spec path."""
    if not TUTORIAL.is_dir():
        raise StackError(f"the OpenFOAM tutorials are missing ({TUTORIAL}): apt-get install openfoam")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copytree(TUTORIAL, dest / "pitzDaily")
    spec = dest / "pitz.yaml"
    shutil.copy(EXAMPLE_SPEC, spec)
    return spec


def run_demo(console: Console, keep_engine: bool = False) -> None:
    settings = get_settings()
    stack = Stack(settings)
    started_here = False
    if settings.redis_url is None and not all(stack.status().values() or [False]):
        console.print("starting the engine (embedded Redis, Celery worker, reconcile loop) ...")
        stack.start()
        started_here = True
    t0 = time.monotonic()
    try:
        spec = prepare_case(settings.root / "demo")
        console.print(f"job spec: {spec}")
        client = Client(settings)
        job_id = client.submit_file(spec)
        console.print(f"submitted [bold]{job_id}[/]: pitzDaily, simpleFoam, 2 virtual nodes x 1 core, mpirun")
        doc = watch_job(client, job_id, console, timeout=600)
        run = next(r for r in doc["runs_detail"] if r["id"] == doc["current_run"])
        console.print(f"run {run['id']}: [bold]{run['state'].value}[/] ({run.get('reason')}); "
                      f"the cluster stays up until you terminate it. Terminating now ...")
        client.terminate(job_id)
        doc = client.wait(job_id, lambda d: d["state"] in JOB_TERMINAL, timeout=120)
        results = Path(doc["results"])
        times = sorted((p.name for p in (results / "runs" / run["id"]).iterdir() if _is_number(p.name)), key=float)
        console.print(f"job {job_id} {doc['state'].value} in {time.monotonic() - t0:.1f}s")
        console.print(f"results: [bold]{results}[/]")
        console.print(f"  time directories: {', '.join(times)}; solver log: "
                      f"{results / 'runs' / run['id'] / (run.get('log_file') or '')}")
    finally:
        if started_here and not keep_engine:
            stack.stop()
            console.print("engine stopped")


def _is_number(name: str) -> bool:
    try:
        float(name)
        return True
    except ValueError:
        return False
