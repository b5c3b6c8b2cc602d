"""A run whose solver converged before its last step shows as done (100 %) wherever progress shows."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.cli.common import _percent, _progress_line
from orchestrator.cli.watch import event_fraction
from orchestrator.model.events import EventKind
from solvers.base import Progress
from solvers.openfoam import OpenFOAM

STATIC = Path(__file__).resolve().parents[2] / "orchestrator" / "api" / "monitor" / "static"


def test_fraction_is_step_over_total_while_running():
    assert Progress(step=280, total=2000).fraction == pytest.approx(0.14)
    assert Progress(step=3000, total=2000).fraction == 1.0
    assert Progress(step=5).fraction is None and Progress().fraction is None


def test_a_converged_run_is_complete_whatever_its_step():
    assert Progress(step=280, total=2000, converged=True).fraction == 1.0
    assert Progress(converged=True).fraction == 1.0  # a solver that reports convergence but no steps


def test_openfoam_converged_in_n_iterations_is_complete():
    plugin = OpenFOAM()
    last = Progress(step=285, total=2000)
    progress = plugin.parse_progress("\nSIMPLE solution converged in 285 iterations\n\n", last)
    assert progress.converged and progress.fraction == 1.0


def test_the_progress_event_carries_the_converged_fraction(store):
    job = store.create_job(name="j", owner="alice", spec={}, backend="local", solver="command")
    store.record_progress(job, "run-001", Progress(step=280, total=2000, converged=True), log_offset=10)
    event = next(e for e in store.events(job) if e.kind is EventKind.PROGRESS)
    assert event.data["fraction"] == 1.0 and event.data["converged"] is True


def test_cli_percent_and_status_line():
    assert _percent(Progress(step=280, total=2000)) == "14%"
    assert _percent(Progress(step=280, total=2000, converged=True)) == "100%"
    assert _percent(None) == "" and _percent(Progress(step=3)) == ""
    assert _progress_line(Progress(step=280, total=2000, converged=True)) == "100%  step 280/2000  converged"
    assert _progress_line(Progress(step=280, total=2000)) == "14%  step 280/2000"
    assert _progress_line(Progress(step=7)) == "step 7"
    assert _progress_line(None) == ""


def test_watch_fills_the_bar_for_a_converged_event_even_an_old_one():
    assert event_fraction({"step": 280, "total": 2000, "fraction": 0.14}) == pytest.approx(0.14)
    # an event recorded before `fraction` knew about convergence
    assert event_fraction({"step": 280, "total": 2000, "fraction": 0.14, "converged": True}) == 1.0
    assert event_fraction({"step": 3}) == 0.0


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_monitor_pages_show_100_percent_for_a_converged_run():
    script = (
        "const fs = require('fs'), vm = require('vm');"
        "const ctx = {document: {addEventListener() {}}}; vm.createContext(ctx);"
        f"vm.runInContext(fs.readFileSync({json.dumps(str(STATIC / 'monitor.js'))}, 'utf8')"
        " + '\\n;globalThis.progressPercent = progressPercent;', ctx);"
        "console.log(JSON.stringify(JSON.parse(process.argv[1]).map(p => ctx.progressPercent(p))));"
    )
    cases = [{"step": 280, "total": 2000, "converged": True}, {"step": 280, "total": 2000, "converged": False},
             None, {"step": 3, "total": None, "converged": False}, {"step": None, "total": None, "converged": True}]
    proc = subprocess.run(["node", "-e", script, json.dumps(cases)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["100%", "14%", "", "", "100%"]
    # the job page goes through the same function
    assert "progressPercent(p)" in (STATIC / "job.js").read_text()
