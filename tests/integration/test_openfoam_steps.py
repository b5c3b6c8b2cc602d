"""OpenFOAM case pipelines for real: tutorials whose Allrun pre-processes (setFields, topoSet, restore0Dir) give,
through the engine, the fields of a direct serial run of their own Allrun; explicit `steps`, a failing step, an
edit of the steps before a rerun, a parallel step."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.model.errors import UserError
from orchestrator.model.states import RunState
from solvers.openfoam import set_entry
from tests.conftest import require

pytestmark = pytest.mark.integration

EXAMPLES = Path("/usr/share/doc/openfoam-examples/examples")
DAMBREAK = EXAMPLES / "multiphase/interFoam/laminar/damBreak/damBreak"
POROUS = EXAMPLES / "incompressible/pisoFoam/laminar/porousBlockage"       # blockMesh, topoSet
SHOCKTUBE = EXAMPLES / "compressible/rhoCentralFoam/shockTube"              # restore0Dir, blockMesh, setFields
# Debian ships no bin/tools/RunFunctions: the direct runs source this one instead (OpenFOAM's semantics for the
# functions the engine's Allrun grammar knows: log.<app>[.<suffix>], restore0Dir from 0.orig).
RUN_FUNCTIONS = Path(__file__).with_name("runfunctions.sh")
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@pytest.fixture
def tutorials(openfoam):
    require(all(p.is_dir() for p in (DAMBREAK, POROUS, SHOCKTUBE)),
            "OpenFOAM tutorials (apt-get install openfoam-examples)")


def _spec(name, case, app, nodes=1, steps=None, **params):
    solver = {"name": "openfoam", "application": app, "case": str(case), "parameters": params}
    if steps is not None:
        solver["steps"] = steps
    return {"name": name, "solver": solver, "desktop": {"enabled": False},
            "cluster": {"backend": "local", "nodes": nodes, "cores_per_node": 1}}


def internal_field(path: Path) -> list[float]:
    """Every number of an ASCII field file's internalField (a uniform value counts once; vectors flattened)."""
    text = path.read_text()
    body = text[text.index("internalField") + len("internalField"):]
    head, _, rest = body.partition(";") if body.lstrip().startswith("uniform") else ("", "", body)
    if head:
        return [float(x) for x in NUMBER.findall(head)]
    count, _, rest = rest.partition("(")
    values = rest[:rest.index("boundaryField")]
    return [float(x) for x in NUMBER.findall(values)][: int(NUMBER.findall(count)[-1]) * 3]


def direct_run(case: Path, where: Path, **params) -> Path:
    """A copy of the tutorial run by its own Allrun (RunFunctions from runfunctions.sh), with `params` set in
    its controlDict as the engine sets them."""
    copy = where / case.name
    shutil.copytree(case, copy)
    control = copy / "system" / "controlDict"
    text = control.read_text()
    for key, value in params.items():
        text = set_entry(text, key, str(value))
    control.write_text(text)
    allrun = copy / "Allrun"
    allrun.write_text(re.sub(r"^\. .*RunFunctions.*$", f". {RUN_FUNCTIONS}", allrun.read_text(), flags=re.M))
    env = {"PATH": "/usr/bin:/bin", "WM_PROJECT_DIR": "/usr/share/openfoam", "HOME": str(where)}
    subprocess.run(["sh", str(allrun)], cwd=copy, env=env, check=True, timeout=120, capture_output=True)
    return copy


def assert_same_fields(engine_case: Path, direct_case: Path, time: str, fields: list[str]) -> None:
    for name in fields:
        got, want = internal_field(engine_case / time / name), internal_field(direct_case / time / name)
        assert len(got) == len(want), name
        bad = [(a, b) for a, b in zip(got, want, strict=True) if not math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)]
        assert not bad, f"{name}: {len(bad)} values differ, e.g. {bad[:3]}"


def run_dir(engine, job_id, run="run-001") -> Path:
    return engine.settings.root / "jobs" / job_id / "runs" / run


def test_dambreak_derives_its_steps_from_the_allrun_and_matches_a_direct_run(engine, tutorials, tmp_path):
    # Given damBreak as shipped (its Allrun: blockMesh, setFields, interFoam), submitted without `steps`
    shutil.copytree(DAMBREAK, tmp_path / "damBreak")
    params = {"endTime": 0.05, "writeFormat": "ascii"}
    job_id = engine.client.submit_data(_spec("dambreak", tmp_path / "damBreak", "interFoam", **params))
    doc = engine.wait_run(job_id, timeout=120)
    run = doc.runs_detail[0]
    assert run.state is RunState.COMPLETED, run
    # Then setFields ran (alpha.water is no longer uniform 0), its log is the step's, and the fields are those
    # of the tutorial's own Allrun
    case = run_dir(engine, job_id)
    alpha = internal_field(case / "0.05" / "alpha.water")
    assert len(alpha) > 1 and max(alpha) > 0.9 and min(alpha) < 0.1
    text, _ = engine.client.read_log(job_id, step="setFields")
    assert b"Setting field region values" in text and b"End" in text
    with pytest.raises(UserError, match="its steps: blockMesh, setFields"):
        engine.client.read_log(job_id, step="topoSet")
    direct = direct_run(DAMBREAK, tmp_path / "direct", **params)
    assert_same_fields(case, direct, "0.05", ["alpha.water", "p_rgh", "U"])


def test_explicit_steps_replace_the_allrun_and_a_failing_step_fails_the_run_until_edited(engine, tutorials,
                                                                                         tmp_path):
    shutil.copytree(DAMBREAK, tmp_path / "damBreak")
    client = engine.client
    # Given explicit steps whose setFields reads a dictionary the case lacks
    steps = [{"run": "blockMesh"}, {"run": "setFields", "args": ["-dict", "system/missingDict"]}]
    job_id = client.submit_data(_spec("steps", tmp_path / "damBreak", "interFoam", steps=steps, endTime=0.05,
                                      writeFormat="ascii"))
    run = engine.wait_run(job_id, timeout=120).runs_detail[0]
    # Then the run failed naming the step and its log, and the solver never ran
    assert run.state is RunState.FAILED, run
    assert run.reason.startswith("setFields failed: see log.setFields"), run.reason
    assert not (run_dir(engine, job_id) / "0.05").exists()
    # When the steps are edited (as `e2e edit --set`) and the job rerun
    client.edit(job_id, ["solver.steps=[{run: blockMesh}, {run: setFields}]"])
    client.rerun(job_id)
    doc = engine.wait_run(job_id, timeout=120)
    run = doc.runs_detail[-1]
    assert run.state is RunState.COMPLETED, run
    alpha = internal_field(run_dir(engine, job_id, run.id) / "0.05" / "alpha.water")
    assert max(alpha) > 0.9 and min(alpha) < 0.1


def test_a_toposet_case_matches_its_direct_run(engine, tutorials, tmp_path):
    shutil.copytree(POROUS, tmp_path / "porousBlockage")
    params = {"endTime": 1, "writeFormat": "ascii"}
    job_id = engine.client.submit_data(_spec("porous", tmp_path / "porousBlockage", "pisoFoam", **params))
    run = engine.wait_run(job_id, timeout=120).runs_detail[0]
    assert run.state is RunState.COMPLETED, run
    assert set(run.step_logs) == {"blockMesh", "topoSet"}
    direct = direct_run(POROUS, tmp_path / "direct", **params)
    assert_same_fields(run_dir(engine, job_id), direct, "1", ["U", "p"])


def test_a_restore0dir_case_matches_its_direct_run(engine, tutorials, tmp_path):
    shutil.copytree(SHOCKTUBE, tmp_path / "shockTube")
    params = {"endTime": 0.001, "writeFormat": "ascii"}
    job_id = engine.client.submit_data(_spec("shock", tmp_path / "shockTube", "rhoCentralFoam", **params))
    run = engine.wait_run(job_id, timeout=120).runs_detail[0]
    assert run.state is RunState.COMPLETED, run
    assert list(run.step_logs) == ["restore0Dir", "blockMesh", "setFields"]
    direct = direct_run(SHOCKTUBE, tmp_path / "direct", **params)
    assert_same_fields(run_dir(engine, job_id), direct, "0.001", ["T", "p", "U"])


def test_a_parallel_step_runs_over_the_allocation(engine, tutorials, tmp_path):
    # Given damBreak on 2 processes with setFields as a parallel step (after the engine's decomposition)
    shutil.copytree(DAMBREAK, tmp_path / "damBreak")
    steps = [{"run": "blockMesh"}, {"run": "setFields", "parallel": True}]
    job_id = engine.client.submit_data(_spec("par", tmp_path / "damBreak", "interFoam", nodes=2, steps=steps,
                                             endTime=0.05, writeFormat="ascii"))
    run = engine.wait_run(job_id, timeout=120).runs_detail[0]
    assert run.state is RunState.COMPLETED, run
    case = run_dir(engine, job_id)
    # setFields ran on each rank's piece (its log is the parallel run's), and the reconstructed field is set
    log = (case / "log.setFields").read_text()
    assert "nProcs : 2" in log
    alpha = internal_field(case / "0.05" / "alpha.water")
    assert max(alpha) > 0.9 and min(alpha) < 0.1
    # the two pieces set at time 0 are, together, exactly what a serial setFields sets (the solved fields of a
    # decomposed interFoam run differ from a serial one's beyond 1e-6: its parallel linear solves differ)
    serial = tmp_path / "serial"
    shutil.copytree(DAMBREAK, serial)
    env = {"PATH": "/usr/bin:/bin", "WM_PROJECT_DIR": "/usr/share/openfoam", "HOME": str(tmp_path)}
    for utility in ("blockMesh", "setFields"):
        subprocess.run([utility], cwd=serial, env=env, check=True, timeout=60, capture_output=True)
    pieces = sorted(internal_field(case / f"processor{i}" / "0" / "alpha.water") for i in (0, 1))
    whole = internal_field(serial / "0" / "alpha.water")
    # (setFields writes 0 or 1 per cell; a piece holding no water is `uniform 0`)
    assert sum(whole) > 0 and sum(map(sum, pieces)) == pytest.approx(sum(whole), rel=1e-12)
