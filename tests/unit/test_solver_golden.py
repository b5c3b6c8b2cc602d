"""Golden tests: rendered scripts, journals, decks and host files of the vendor plugins against checked-in copies.

Regenerate after an intended change with `E2E_UPDATE_GOLDEN=1 pytest tests/unit/test_solver_golden.py`,
then review `git diff tests/golden`.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from tests.unit.solver_cases import CASES, describe

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("E2E_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rendered_files_match_golden(case, tmp_path):
    prepared, _ = case.render(tmp_path / "run")
    produced = {name: (tmp_path / "run" / name).read_text() for name in case.files}
    produced["prepared.json"] = describe(prepared)
    folder = GOLDEN / case.id
    if UPDATE:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for name, text in produced.items():
            (folder / name).write_text(text)
    problems = []
    expected_names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if expected_names != set(produced):
        problems.append(f"files differ: golden has {sorted(expected_names)}, rendering made {sorted(produced)}")
    for name, text in produced.items():
        golden = folder / name
        want = golden.read_text() if golden.is_file() else ""
        if want != text:
            diff = difflib.unified_diff(want.splitlines(keepends=True), text.splitlines(keepends=True),
                                        f"golden/{case.id}/{name}", f"rendered/{name}")
            problems.append("".join(diff))
    assert not problems, ("rendering differs from tests/golden (E2E_UPDATE_GOLDEN=1 regenerates):\n"
                          + "\n".join(problems))


def test_every_golden_folder_belongs_to_a_case():
    assert {p.name for p in GOLDEN.iterdir() if p.is_dir()} == {c.id for c in CASES}


LAUNCH_LINES = {"fluent": "exec fluent 3ddp -g -t12 -cnf=fluent.hosts -mpi=intel -ssh -i run-1.jou",
                "mechanical": "exec ansys241 -b -dis -np 12 -machines n1:4:n2:4:n3:4 -mpi intelmpi -j beam",
                "electronics": "-machinelist list=n1:1:8:90%,n2:1:8:90%,n3:1:8:90%",
                "starccm": "exec starccm+ -batch e2e_run.java -np 12 -machinefile machinefile -rsh ssh -mpi openmpi"
                           " -power -port 47827 pipe.sim",
                "calculix": "ccx -i job > ccx-1.log"}


@pytest.mark.parametrize("solver", list(LAUNCH_LINES))
def test_example_specs_render_on_explicit_hosts(solver, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from orchestrator.cli.main import app

    monkeypatch.setenv("E2E_HOME", str(tmp_path / "home"))
    example = Path(__file__).resolve().parents[2] / "examples" / f"{solver}.yaml"
    result = CliRunner().invoke(app, ["render", str(example), "--out", str(tmp_path / "out"), "--hosts", "n1,n2,n3"])
    assert result.exit_code == 0, result.output
    assert LAUNCH_LINES[solver] in (tmp_path / "out" / "run.sh").read_text()
    assert (tmp_path / "out" / "hostfile").read_text().splitlines()[0].startswith("n1 ")


def test_render_refuses_a_hostile_host_list(tmp_path, monkeypatch, capsys):
    import sys

    from orchestrator.cli.main import main

    monkeypatch.setenv("E2E_HOME", str(tmp_path / "home"))
    example = Path(__file__).resolve().parents[2] / "examples" / "fluent.yaml"
    monkeypatch.setattr(sys, "argv", ["e2e", "render", str(example), "--out", str(tmp_path / "out"),
                                      "--hosts", "n1,$(id)"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2 and "--hosts" in capsys.readouterr().err
    assert not (tmp_path / "out" / "run.sh").exists()
