"""Series and rules on a real OpenFOAM run: pitzDaily with function objects (residuals, forceCoeffs) tailed
into series, and monitor rules that stop it once converged (fields written, COMPLETED with the rule's reason)
or pause it once a series is steady."""

from __future__ import annotations

import re
import shutil

import pytest

from orchestrator.model.events import EventKind
from orchestrator.model.states import RunState

from .conftest import PITZ

pytestmark = pytest.mark.integration

FUNCTIONS = """functions
{
    residuals { type solverInfo; libs ("libutilityFunctionObjects.so"); fields (U p); }
    fc { type forceCoeffs; libs ("libforces.so"); patches (lowerWall); rho rhoInf; rhoInf 1; CofR (0 0 0);
         liftDir (0 1 0); dragDir (1 0 0); pitchAxis (0 0 1); magUInf 10; lRef 1; Aref 1; }
}
"""


def _case(tmp_path):
    case = tmp_path / "pitzDaily"
    shutil.copytree(PITZ, case)
    control = case / "system" / "controlDict"
    control.write_text(re.sub(r"^functions\s*\{.*?^\}", FUNCTIONS, control.read_text(), flags=re.S | re.M))
    return case


def _spec(name, case, rules):
    return {"name": name, "solver": {"name": "openfoam", "application": "simpleFoam", "case": str(case),
                                     "parameters": {"endTime": 2000, "writeInterval": 2000}},
            "cluster": {"backend": "local", "nodes": 1, "cores_per_node": 1}, "desktop": {"enabled": False},
            "monitor": {"rules": rules}}


def test_a_converged_rule_stops_pitzdaily_with_its_fields_written_and_completed(engine, openfoam, tmp_path):
    # Given pitzDaily set to run 2000 iterations, and a loose convergence rule that holds after a few dozen
    client = engine.client
    rule = {"name": "loose", "when": "converged", "below": {"p": 0.03, "Ux": 0.02}, "action": "stop"}
    job_id = client.submit_data(_spec("pitz-rule", _case(tmp_path), [rule]))
    # When it runs
    doc = engine.wait_run(job_id, timeout=180)
    run = doc.runs_detail[0]
    # Then the rule stopped it gracefully: COMPLETED, the rule as the reason, exit 0, no signal needed
    assert run.state is RunState.COMPLETED, run
    assert run.reason and run.reason.startswith("rule loose: converged: p "), run.reason
    assert run.exit_code == 0 and run.term_sent_at is None
    fired = [e.data for e in client.events(job_id) if e.kind is EventKind.RULE_FIRED]
    assert len(fired) == 1 and fired[0]["rule"] == "loose" and fired[0]["action"] == "stop"
    assert fired[0]["values"]["p"] < 0.03 and fired[0]["values"]["Ux"] < 0.02
    # the solver wrote its fields at the time it stopped, well before endTime
    run_dir = engine.settings.root / "jobs" / job_id / "runs" / "run-001"
    times = [float(p.name) for p in run_dir.iterdir() if re.fullmatch(r"\d+(\.\d+)?", p.name) and p.name != "0"]
    assert times and max(times) < 2000, times
    written = run_dir / f"{max(times):g}"
    assert (written / "U").is_file() and (written / "p").is_file()
    # and the function objects' tables arrived as series, in step order
    listing = client.series(job_id)
    assert {"residuals/p_initial", "residuals/Ux_initial", "fc/Cd", "fc/Cl"} <= set(listing["names"])
    xs = [p[0] for p in listing["series"]["residuals/p_initial"]]
    assert xs[:3] == [1.0, 2.0, 3.0] and xs == sorted(xs) and len(xs) >= 10
    assert any(e.kind is EventKind.SERIES for e in client.events(job_id))


def test_a_steady_series_rule_pauses_the_run_and_the_series_are_listed(engine, openfoam, tmp_path):
    # Given a rule on the drag coefficient: steady to 5 % over 10 iterations (loose, so it holds early)
    client = engine.client
    rule = {"name": "cd-steady", "when": "series", "series": "fc/Cd", "tolerance": "5%", "window": 10,
            "action": "pause"}
    job_id = client.submit_data(_spec("pitz-series", _case(tmp_path), [rule]))
    doc = engine.wait_run(job_id, timeout=180)
    run = doc.runs_detail[0]
    # Then the run paused (a checkpoint to restart from) with the rule's reason, and the event says why
    assert run.state is RunState.PAUSED, run
    assert run.reason and run.reason.startswith("rule cd-steady: fc/Cd steady"), run.reason
    fired = next(e.data for e in client.events(job_id) if e.kind is EventKind.RULE_FIRED)
    assert fired["values"]["change"] <= 0.05 and fired["values"]["window"] == 10
    # the series holds the very points the rule judged: the 10 up to the firing one spread by <= 5 %
    cd = client.series(job_id, names=["fc/Cd"])["series"]["fc/Cd"]
    upto = [p for p in cd if p[0] <= fired["values"]["x"]][-10:]
    assert upto[-1] == [fired["values"]["x"], fired["values"]["fc/Cd"]]
    ys = [p[1] for p in upto]
    assert (max(ys) - min(ys)) / abs(ys[-1]) <= 0.05
    assert "residuals/p_initial" in client.series(job_id)["names"]
