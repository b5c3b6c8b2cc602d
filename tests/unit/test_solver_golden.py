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
