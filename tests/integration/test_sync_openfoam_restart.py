"""A desktop edit used by the next restart: real OpenFOAM (icoFoam cavity) paused, its controlDict edited in the
work folder, restarted; the restarted solver writes on the edited schedule and its outputs come back."""

from __future__ import annotations

import re
import shutil

import pytest

from orchestrator.model.paths import JobPaths
from orchestrator.model.states import JobState, RunState

from .conftest import CAVITY, wait_for

pytestmark = pytest.mark.integration

DT = 0.005  # the cavity tutorial's deltaT


def _times(folder) -> set[int]:
    """Time steps (as step counts) of the time folders written so far."""
    steps = set()
    for p in folder.iterdir() if folder.is_dir() else ():
        if p.is_dir() and re.fullmatch(r"\d+(\.\d+)?(e-?\d+)?", p.name) and float(p.name) > 0:
            steps.add(round(float(p.name) / DT))
    return steps


def _log_tail(run_dir, log_file) -> str:
    log = run_dir / (log_file or "log")
    return log.read_text(errors="replace")[-1500:] if log.is_file() else f"no log at {log}"


def test_a_controldict_edited_on_the_desktop_is_used_by_the_restart(engine, openfoam, tmp_path):
    shutil.copytree(CAVITY, tmp_path / "cavity")
    client = engine.client
    job_id = client.submit_data({"name": "sync-restart", "solver": {
        "name": "openfoam", "application": "icoFoam", "case": str(tmp_path / "cavity"),
        "parameters": {"endTime": 100}},  # the tutorial writes every 20 steps
        "cluster": {"backend": "local", "nodes": 1, "cores_per_node": 1}})
    paths = JobPaths.for_job(engine.settings.root, job_id)
    run_dir, work = paths.run("run-001").root, paths.work_of("run-001")
    # Given the solver has written a few time steps, and they are on the desktop
    wait_for(lambda: len(_times(work)) >= 2 and (work / "system" / "controlDict").exists(), 120,
             "time folders and the case in work/run-001")
    # When it is paused (it writes the current step and exits) and the pause's controlDict reached the desktop
    client.pause(job_id)
    engine.wait_run(job_id, timeout=120)
    run = client.status(job_id).runs_detail[0]
    assert run.state is RunState.PAUSED, (run.state, run.reason, run.exit_code, _log_tail(run_dir, run.log_file))
    wait_for(lambda: "stopAt writeNow;" in (work / "system" / "controlDict").read_text(), 30,
             "the paused controlDict")
    before = _times(run_dir)
    # And the user changes the write schedule on the desktop
    control = work / "system" / "controlDict"
    control.write_text(re.sub(r"writeInterval\s+\d+;", "writeInterval 7;", control.read_text()))
    wait_for(lambda: "writeInterval 7;" in (run_dir / "system" / "controlDict").read_text(), 30,
             "the edit in the run directory")
    # Then the restart continues with it: new time folders every 7 steps, and they reach the desktop
    client.restart(job_id)
    wait_for(lambda: any(s % 7 == 0 and s % 20 for s in _times(work) - before), 120,
             "a time folder on the edited schedule in work/run-001")
    new = _times(run_dir) - before
    assert new and all(s % 7 == 0 for s in new), sorted(new)
    client.terminate(job_id)
    assert engine.wait_job_terminal(job_id, timeout=120).state is JobState.TERMINATED
    assert _times(work) == _times(run_dir)
