"""OpenFOAM `steps:` and the Allrun grammar: each understood line kind, each refusal (with its line number), the
spec-level derivation and its errors, the rendered run script (quoting, order, failure message), restarts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestrator.model.errors import SpecError
from orchestrator.model.rendering import render
from orchestrator.model.spec import validate_spec
from solvers.base import TEMPLATES_ROOT, LaunchContext, NodeSlots, RunMode
from solvers.openfoam import OpenFOAM, OpenFOAMOptions
from solvers.openfoam_allrun import AllrunError, derive
from solvers.openfoam_steps import Step, step_logs

CONTROL = "FoamFile { version 2.0; format ascii; class dictionary; object controlDict; }\napplication interFoam;\n" \
          "startTime 0;\nendTime 1;\ndeltaT 0.1;\nwriteControl timeStep;\nwriteInterval 10;\n"
HEAD = '#!/bin/sh\ncd "${0%/*}" || exit                                # Run from this directory\n' \
       ". ${WM_PROJECT_DIR:?}/bin/tools/RunFunctions        # Tutorial run functions\n"


def make_case(root: Path, allrun: str | None = None, pre: str | None = None) -> Path:
    case = root / "case"
    (case / "system").mkdir(parents=True)
    (case / "system" / "controlDict").write_text(CONTROL)
    if allrun is not None:
        (case / "Allrun").write_text(allrun)
    if pre is not None:
        (case / "Allrun.pre").write_text(pre)
    return case


def test_every_understood_line_kind_becomes_its_step(tmp_path):
    allrun = HEAD + """\
# a comment, then a blank line

cd ${0%/*} || exit 1
. $WM_PROJECT_DIR/bin/tools/RunFunctions
./Allrun.pre
restore0Dir;
runApplication -s fine blockMesh -dict system/blockMeshDict.fine
\\cp 0/alpha.water.orig 0/alpha.water
cp -r constant/a constant/b
mv system/x.orig system/x
runApplication -o topoSet \\
    -dict system/topoSetDict
runApplication decomposePar -force
runParallel checkMesh -writeFields '(nonOrthoAngle)'
application=$(getApplication)
runParallel $application
runApplication reconstructPar -latestTime
# done
"""
    case = make_case(tmp_path, allrun, pre=HEAD + "runApplication setFields\n")
    found = derive(case, "interFoam")
    assert found.steps == [
        {"run": "setFields", "args": [], "parallel": False},
        {"run": "restore0Dir"},
        {"run": "blockMesh", "args": ["-dict", "system/blockMeshDict.fine"], "parallel": False,
         "log": "log.blockMesh.fine"},
        {"run": "cp", "args": ["0/alpha.water.orig", "0/alpha.water"]},
        {"run": "cp", "args": ["-r", "constant/a", "constant/b"]},
        {"run": "mv", "args": ["system/x.orig", "system/x"]},
        {"run": "topoSet", "args": ["-dict", "system/topoSetDict"], "parallel": False},
        {"run": "checkMesh", "args": ["-writeFields", "(nonOrthoAngle)"], "parallel": True},
    ]
    assert found.solver_line == 19


@pytest.mark.parametrize("solver", ["runApplication $(getApplication)", "runParallel `getApplication`",
                                    "runApplication interFoam", "interFoam"])
def test_the_solver_line_in_its_forms(tmp_path, solver):
    case = make_case(tmp_path, HEAD + "runApplication setFields\n" + solver + "\n")
    assert derive(case, "interFoam").solver_line == 5


@pytest.mark.parametrize("line, fragment", [
    ("if notTest $@", "variable"),
    ("m4 system/blockMeshDict.m4 > system/blockMeshDict", "compound"),
    ("runApplication blockMesh && echo done", "compound"),
    ("foamDictionary -entry x -set 1 system/controlDict", "not a line the engine understands"),
    ("runApplication -a setFields", "-a is not supported"),
    ("runParallel -np 4 setFields", "-np is not supported"),
    ("runApplication decomposePar -cellDist", "decomposePar with options"),
    ("restore0Dir -processor", "restore0Dir takes no options"),
    ("cp ../other/0/U 0/U", "only relative paths inside the case"),
    ("cp /etc/passwd 0/U", "only relative paths inside the case"),
    ("cp 0/* 0.orig", "no variables, globs"),
    ("cp -a 0/U 0/V", "only -r and -f"),
    ("runApplication ./makeMesh", "not a utility name"),
    ("runApplication $(getApplication) -postProcess", "the solver with arguments"),
    ("runApplication \"unclosed", "cannot be split"),
])
def test_a_line_outside_the_grammar_is_refused_with_its_number(tmp_path, line, fragment):
    case = make_case(tmp_path, HEAD + "runApplication blockMesh\n" + line + "\nrunApplication $(getApplication)\n")
    with pytest.raises(AllrunError) as caught:
        derive(case, "interFoam")
    assert caught.value.number == 5 and caught.value.line == line
    assert fragment in str(caught.value)
    assert "Allrun line 5" in str(caught.value) and "solver.steps" in str(caught.value)


def test_lines_after_the_solver_and_a_missing_solver_are_refused(tmp_path):
    case = make_case(tmp_path, HEAD + "runApplication $(getApplication)\nrunApplication foamToVTK\n")
    with pytest.raises(AllrunError, match="line 5.*after the solver"):
        derive(case, "interFoam")
    (case / "Allrun").write_text(HEAD + "runApplication setFields\n")
    with pytest.raises(AllrunError, match="^Allrun: it never runs the solver") as caught:
        derive(case, "interFoam")
    assert caught.value.number == 0


def test_a_serial_step_after_a_parallel_one_is_refused(tmp_path):
    case = make_case(tmp_path, HEAD + "runParallel setFields\nrunApplication topoSet\nrunApplication interFoam\n")
    with pytest.raises(AllrunError, match="line 5.*serial step after a parallel"):
        derive(case, "interFoam")


def test_allrun_pre_alone_gives_steps_without_a_solver_and_no_script_gives_none(tmp_path):
    case = make_case(tmp_path, pre=HEAD + "runApplication blockMesh\n")
    assert derive(case, "interFoam").steps == [{"run": "blockMesh", "args": [], "parallel": False}]
    (case / "Allrun.pre").unlink()
    assert derive(case, "interFoam") is None


def spec(case: Path, **solver) -> dict:
    return {"name": "s", "solver": {"name": "openfoam", "application": "interFoam", "case": str(case), **solver}}


def test_submit_derives_the_steps_and_stores_them_in_the_spec(tmp_path):
    case = make_case(tmp_path, HEAD + "runApplication blockMesh\nrunApplication setFields\n"
                                      "runApplication $(getApplication)\n")
    parsed = validate_spec(spec(case))
    assert [s.run for s in parsed.solver.steps] == ["blockMesh", "setFields"]
    # re-read from the store (no path checks): the stored steps, not derived again
    stored = parsed.model_dump(mode="json")
    (case / "Allrun").write_text("garbage\n")
    assert validate_spec(stored, check_paths=False).solver.steps == parsed.solver.steps
    # explicit steps (even none) win over the Allrun
    assert validate_spec(spec(case, steps=[])).solver.steps == []


def test_submit_refuses_an_allrun_line_naming_the_file_line_and_steps(tmp_path):
    case = make_case(tmp_path, HEAD + "sed -i s/a/b/ system/controlDict\nrunApplication $(getApplication)\n")
    with pytest.raises(SpecError) as caught:
        validate_spec(spec(case))
    field, message = caught.value.problems[0]
    assert field == "solver.steps"
    assert "Allrun line 4" in message and "sed -i" in message and "solver.steps" in message


def test_submit_refuses_an_application_other_than_the_allruns(tmp_path):
    case = make_case(tmp_path, HEAD + "runApplication $(getApplication)\n")
    with pytest.raises(SpecError, match="runs the controlDict's application 'interFoam'"):
        validate_spec({**spec(case), "solver": {**spec(case)["solver"], "application": "icoFoam"}})


@pytest.mark.parametrize("steps, fragment", [
    ([{"run": "set Fields"}], "solver.steps.0.run"),
    ([{"run": "cp", "args": ["/etc/passwd", "x"]}], "only relative paths"),
    ([{"run": "restore0Dir", "parallel": True}], "built-in"),
    ([{"run": "a", "args": ["line\nbreak"]}], "solver.steps.0.args.0"),
    ([{"run": "a", "parallel": True}, {"run": "b"}], "serial after a parallel step"),
    ([{"run": "a", "log": "log.x"}, {"run": "b", "log": "log.x"}], "the same log"),
    ([{"run": "a", "log": "log.interFoam"}], "the solver's"),
    ([{"run": "a", "log": "../x"}], "solver.steps.0.log"),
])
def test_explicit_steps_are_checked(tmp_path, steps, fragment):
    case = make_case(tmp_path)
    with pytest.raises(SpecError, match=fragment.replace(".", r"\.")):
        validate_spec(spec(case, steps=steps))


def test_step_logs_number_repeated_utilities():
    steps = [Step(run="topoSet"), Step(run="topoSet", log="log.topoSet.fine"), Step(run="topoSet"),
             Step(run="restore0Dir")]
    assert step_logs(steps) == {"topoSet": "log.topoSet", "topoSet.fine": "log.topoSet.fine",
                                "topoSet.2": "log.topoSet.2", "restore0Dir": "log.restore0Dir"}


# -- the rendered run script, executed against stub programs

HOSTILE = ["$(touch MARK)", "; touch MARK", "a b", "`touch MARK`", "' ; touch MARK ; '", "--x > MARK"]
STUBS = ["blockMesh", "setFields", "topoSet", "decomposePar", "mpirun", "reconstructPar", "interFoam"]


def stub_bin(root: Path, failing: str | None = None) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name in STUBS:
        code = 1 if name == failing else 0
        (bin_dir / name).write_text('#!/bin/bash\n{ for a in "$@"; do printf \'%s\\0\' "$a"; done; } >> '
                                    f'"$STUB_CALLS/${{0##*/}}"\necho "$0 ran"\nexit {code}\n')
        (bin_dir / name).chmod(0o755)
    return bin_dir


def prepared_script(tmp_path: Path, steps: list, nprocs: int = 1, mode: RunMode = RunMode.FRESH):
    case = make_case(tmp_path)
    (case / "0.orig").mkdir()
    (case / "0.orig" / "U").write_text("restored\n")
    options = OpenFOAMOptions.model_validate(
        {"name": "openfoam", "application": "interFoam", "case": str(case), "steps": steps, "mesh": "none"})
    run_dir = tmp_path / "run"
    nodes = tuple(NodeSlots(f"n{i}", "localhost", 1) for i in range(nprocs))
    prepared = OpenFOAM().prepare(options, LaunchContext("j", "run-001", run_dir, nodes, "hostfile", False,
                                                         mode=mode))
    return run_dir, prepared, render((TEMPLATES_ROOT,), prepared.template, prepared.context)


def run(run_dir: Path, script: str, bin_dir: Path) -> subprocess.CompletedProcess:
    (run_dir / "run.sh").write_text(script)
    calls = run_dir.parent / "calls"
    calls.mkdir(exist_ok=True)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_CALLS": str(calls)}
    return subprocess.run(["bash", "run.sh"], cwd=run_dir, env=env, capture_output=True, text=True, timeout=30)


def argv(tmp_path: Path, name: str) -> list[str]:
    path = tmp_path / "calls" / name
    return path.read_text().split("\0")[:-1] if path.exists() else []


@pytest.mark.parametrize("nprocs", [1, 2])
def test_steps_run_in_order_with_every_argument_one_word(tmp_path, nprocs):
    mark = tmp_path / "MARK"
    hostile = [h.replace("MARK", str(mark)) for h in HOSTILE]
    steps = [{"run": "restore0Dir"}, {"run": "setFields", "args": hostile},
             {"run": "cp", "args": ["0/U", "0/U.copy"]}, {"run": "topoSet", "args": ["-dict", "x"], "parallel": True}]
    run_dir, prepared, script = prepared_script(tmp_path, steps, nprocs)
    result = run(run_dir, script, stub_bin(tmp_path))
    assert result.returncode == 0, result.stderr
    assert not mark.exists()
    assert argv(tmp_path, "setFields") == hostile
    assert (run_dir / "0" / "U.copy").read_text() == "restored\n"  # restore0Dir, then cp, in that order
    assert (run_dir / "log.setFields").read_text().endswith("setFields ran\n")
    if nprocs == 1:  # no decomposition: the parallel step runs serially, without -parallel
        assert argv(tmp_path, "topoSet") == ["-dict", "x"]
    else:  # after decomposePar, over the allocation
        mpirun = argv(tmp_path, "mpirun")
        assert mpirun[mpirun.index("topoSet"):mpirun.index("topoSet") + 4] == ["topoSet", "-dict", "x", "-parallel"]
        assert script.index("decomposePar") < script.index("topoSet")
    assert prepared.step_logs == {"restore0Dir": "log.restore0Dir", "setFields": "log.setFields",
                                  "cp": "log.cp", "topoSet": "log.topoSet"}
    assert prepared.info["steps"].startswith("restore0Dir > log.restore0Dir; setFields ")


def test_a_failing_step_stops_the_run_and_says_so_in_the_solver_log(tmp_path):
    run_dir, prepared, script = prepared_script(tmp_path, [{"run": "setFields"}, {"run": "topoSet"}])
    result = run(run_dir, script, stub_bin(tmp_path, failing="setFields"))
    assert result.returncode == 6
    assert "setFields failed: see log.setFields" in result.stderr
    assert argv(tmp_path, "topoSet") == [] and not (tmp_path / "calls" / "interFoam").exists()
    tail = (run_dir / prepared.log_file).read_text()
    outcome = OpenFOAM().judge_exit(result.returncode, tail)
    assert not outcome.ok and outcome.reason == "setFields failed: see log.setFields (exit code 6)"


def test_a_restart_never_reruns_the_steps(tmp_path):
    run_dir, prepared, _ = prepared_script(tmp_path, [{"run": "setFields"}])
    assert prepared.context["serial_steps"]
    options = OpenFOAMOptions.model_validate({"name": "openfoam", "application": "interFoam",
                                              "case": str(tmp_path / "case"), "steps": [{"run": "setFields"}]})
    ctx = LaunchContext("j", "run-001", run_dir, (NodeSlots("n", "localhost", 1),), "hostfile", False,
                        mode=RunMode.RESTART, attempt=2)
    restarted = OpenFOAM().prepare(options, ctx)
    script = render((TEMPLATES_ROOT,), restarted.template, restarted.context)
    assert restarted.context["serial_steps"] == [] and restarted.context["parallel_steps"] == []
    assert "setFields" not in script
    assert restarted.step_logs == {"setFields": "log.setFields"}  # the first attempt's logs stay readable


def test_steps_cannot_change_while_the_solver_runs(tmp_path):
    case = make_case(tmp_path)
    old = OpenFOAMOptions.model_validate({"name": "openfoam", "application": "interFoam", "case": str(case),
                                          "steps": []})
    new = old.model_copy(update={"steps": [Step(run="setFields")]})
    with pytest.raises(SpecError, match="solver.steps"):
        OpenFOAM().apply_live(old, new, files=None)
