"""Each vendor plugin through the engine: submit -> progress events -> pause -> restart -> completed -> terminate,
with the emulators on the workers' PATH (Fluent, MAPDL, AEDT, STAR-CCM+) and real CalculiX."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from orchestrator.cluster.identity import SAFE_PATH
from orchestrator.model.events import EventKind
from orchestrator.model.records import Run
from orchestrator.model.states import JobState, RunState
from orchestrator.worker.stack import free_port
from tests.conftest import require

from .conftest import Engine, make_settings, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EMULATORS = ROOT / "tests" / "emulators"
DATA = ROOT / "examples" / "data"
LICENCE = "1055@licence-server-SECRET-91b"
PODKEY = "podkey-SECRET-3c7"


@pytest.fixture(scope="module")
def vendor_engine(redis_url, tmp_path_factory):
    """An engine whose workers find the emulated launchers on PATH, with a cluster-wide licence setting."""
    settings = make_settings(tmp_path_factory.mktemp("e2e-vendor"), redis_url + "/5", stop_grace=20,
                             solver_env={"ANSYSLMD_LICENSE_FILE": LICENCE}, job_path=f"{EMULATORS}:{SAFE_PATH}")
    eng = Engine(settings, worker_env={"PATH": f"{EMULATORS}:{os.environ['PATH']}", "E2E_EMULATOR_DELAY": "0.04"})
    yield eng
    eng.close()


def _run(client, job_id: str) -> Run:
    doc = client.status(job_id)
    return next(r for r in doc.runs_detail if r.id == doc.current_run)


def _step(client, job_id: str) -> float:
    progress = _run(client, job_id).progress
    return progress.step if progress and progress.step is not None else -1


CASES = {
    "fluent": ({"case": "elbow.cas.h5", "iterations": 150, "autosave_every": 25}, 2, 1, 20, 150),
    "mechanical": ({"input": "beam.dat", "jobname": "beam", "version": "241"}, 2, 1, 0.2, 1.0),
    "electronics": ({"project": "patch.aedt", "design": "HFSSDesign1", "setup": "Setup1"}, 2, 1, 2, 7),
    "starccm": ({"sim": "pipe.sim", "max_steps": 120, "power": True, "podkey": PODKEY}, 2, 1, 15, 120),
    "calculix": ({"input": "cantilever.inp"}, 1, 2, 0.3, 4.0),
}


@pytest.mark.parametrize("solver", list(CASES))
def test_submit_progress_pause_restart_complete_terminate(solver, vendor_engine, tmp_path):
    if solver == "calculix":
        require(shutil.which("ccx") is not None, "CalculiX (apt-get install calculix-ccx)")
    options, nodes, cores, pause_after, final = CASES[solver]
    for name in ("elbow.cas.h5", "beam.dat", "patch.aedt", "pipe.sim", "cantilever.inp"):
        shutil.copy(DATA / name, tmp_path / name)
    spec = {"name": f"e2e-{solver}", "solver": {"name": solver, **{k: (str(tmp_path / v) if k in (
        "case", "input", "project", "sim") else v) for k, v in options.items()}},
        "desktop": {"enabled": False}, "cluster": {"backend": "local", "nodes": nodes, "cores_per_node": cores}}
    if solver == "starccm":
        spec["solver"]["server_port"] = free_port()
    client = vendor_engine.client
    job_id = client.submit_data(spec)
    run_dir = vendor_engine.settings.root / "jobs" / job_id / "runs" / "run-001"

    # progress events arrive while it runs
    wait_for(lambda: _step(client, job_id) >= pause_after, 90, f"{solver} progress past {pause_after}")
    assert _run(client, job_id).state is RunState.RUNNING
    if solver == "starccm":
        assert _run(client, job_id).info["server"].endswith(f":{spec['solver']['server_port']}")

    # pause: checkpoint and stop (AEDT has no stop file: the engine's SIGTERM, its passes are kept)
    client.pause(job_id)
    doc = vendor_engine.wait_run(job_id, timeout=90)
    run = doc.runs_detail[0]
    assert run.state is RunState.PAUSED, run
    paused_at = run.progress.step
    timing = ("term_sent_at", "stop_sent_at", "stop_requested_at", "exit_code", "started_at", "ended_at")
    assert paused_at < final, ({k: getattr(run, k) for k in timing},
                               [(e.kind, e.data) for e in client.events(job_id)][-12:])
    if solver != "electronics":
        assert run.term_sent_at is None, f"{solver}: the graceful pause needed SIGTERM"
    assert doc.state is JobState.UP

    # restart: a second attempt in the same run directory, from the checkpoint, to the end
    client.restart(job_id)
    doc = vendor_engine.wait_run(job_id, timeout=120)
    run = doc.runs_detail[0]
    assert run.state is RunState.COMPLETED, run
    assert run.attempt == 2
    assert run.progress.step == pytest.approx(final)
    _check_continued(solver, run_dir, paused_at)
    _check_series(solver, client, job_id, final)

    events = client.events(job_id)
    progress = [e for e in events if e.kind is EventKind.PROGRESS]
    assert len(progress) >= 3
    assert [e.data["state"] for e in events if e.kind is EventKind.RUN_STATE].count("PAUSED") == 1
    # licence settings reach the solver's environment, never events or logs
    everything = json.dumps([e.data for e in events], default=str)
    assert LICENCE not in everything and PODKEY not in everything
    for path in run_dir.rglob("*"):
        if path.is_file() and path.name != "wrapper.sh" and path.stat().st_size < 5_000_000:
            text = path.read_text(errors="replace")
            assert LICENCE not in text and PODKEY not in text, f"a secret leaked into {path.name}"

    client.terminate(job_id)
    doc = vendor_engine.wait_job_terminal(job_id)
    assert doc.state is JobState.TERMINATED
    results = vendor_engine.settings.root / "results" / job_id / "runs" / "run-001"
    assert any(results.iterdir())


SERIES = {"fluent": "report-def-0-rfile/cd-1", "starccm": "Cd/Cd Monitor: Cd", "calculix": "increments/iterations"}


def _check_series(solver: str, client, job_id: str, final: float) -> None:
    """The monitor files the solver wrote (report files, monitor exports, .sta) arrived as series, across
    the pause and the restart, in order up to the last (the emulators: every iteration exactly once)."""
    if solver not in SERIES:
        return
    listing = client.series(job_id, last=10_000)
    points = listing["series"][SERIES[solver]]
    xs = [p[0] for p in points]
    assert points, solver
    if solver == "calculix":
        # the restart recomputes the increments after the last restart record (the end of a step): x goes back
        # to that step's start once, then on, in order, to the end
        backs = [i for i in range(1, len(xs)) if xs[i] < xs[i - 1]]
        assert len(backs) <= 1 and xs[-1] == pytest.approx(final) and xs[0] > 0, (solver, xs)
        cut = backs[0] if backs else len(xs)
        assert xs[:cut] == sorted(xs[:cut]) and xs[cut:] == sorted(xs[cut:]), (solver, xs)
        return
    assert xs == sorted(xs), (solver, xs[:20])
    assert xs == [float(i) for i in range(1, int(final) + 1)], (solver, len(xs))
    assert abs(points[-1][1] - 0.3) < 0.01  # the emulated coefficient settled
    if solver == "starccm":
        assert "Residuals/Continuity" in listing["names"]


def _check_continued(solver: str, run_dir: Path, paused_at: float) -> None:
    """The second attempt started where the first stopped (not from scratch)."""
    if solver == "fluent":
        first, second = (run_dir / "fluent-1.trn").read_text(), (run_dir / "fluent-2.trn").read_text()
        assert "exit requested" in first
        assert f"iteration {int(paused_at)})" in second and "hyb-initialization" not in second
        assert "run tag: " in first and "(none)" not in first.split("run tag: ")[1].split("\n")[0]
    elif solver == "mechanical":
        assert "abort file" in (run_dir / "beam-1.out").read_text()
        assert "RESTARTING FROM LOAD STEP 1" in (run_dir / "beam-2.out").read_text()
    elif solver == "electronics":
        assert "Reusing" in (run_dir / "ansysedt-2.log").read_text()
    elif solver == "starccm":
        assert "Stop File satisfied" in (run_dir / "starccm-1.log").read_text()
        assert f"@{int(paused_at):05d}.sim (iteration {int(paused_at)})" in (run_dir / "starccm-2.log").read_text()
    elif solver == "calculix":
        assert "stopped on request after step" in (run_dir / "ccx-1.log").read_text()
        assert "*RESTART,READ" in (run_dir / "job_r2.inp").read_text()
        assert " Job finished" in (run_dir / "ccx-2.log").read_text()


def test_terminate_while_running_stops_through_the_exit_file(vendor_engine, tmp_path):
    shutil.copy(DATA / "elbow.cas.h5", tmp_path / "elbow.cas.h5")
    client = vendor_engine.client
    job_id = client.submit_data({"name": "e2e-fluent-terminate", "solver": {
        "name": "fluent", "case": str(tmp_path / "elbow.cas.h5"), "iterations": 5000, "autosave_every": 1000},
        "desktop": {"enabled": False}, "cluster": {"backend": "local", "nodes": 3, "cores_per_node": 1}})
    wait_for(lambda: _step(client, job_id) >= 10, 60, "fluent progress past 10")
    client.terminate(job_id)
    doc = vendor_engine.wait_job_terminal(job_id, timeout=60)
    run = doc.runs_detail[0]
    assert doc.state is JobState.TERMINATED and run.state is RunState.STOPPED
    assert run.term_sent_at is None, "exit-fluent did not stop the run: SIGTERM was needed"
    results = vendor_engine.settings.root / "results" / job_id / "runs" / "run-001"
    assert "exit requested" in (results / "fluent-1.trn").read_text()
    assert list((results / "autosave").glob("run-*.dat.h5")), "no checkpoint was written at the stop"
    assert (results / "fluent.hosts").read_text().count("\n") == 3
