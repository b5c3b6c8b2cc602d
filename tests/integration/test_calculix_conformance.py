"""CalculiX conformance, a fast sample (the whole suite: `make ccx-conformance`): decks of CalculiX's own test
suite, and a deck built from one with an *INCLUDE tree and keyword lines ending in a comma, give a
byte-identical .dat through the engine's rendered run and directly through ccx."""

from __future__ import annotations

import shutil

import pytest

from tests.conformance.ccx import SUITE, check_deck, check_folder, run_direct, suite_decks, unpack
from tests.conformance.ccx import main as conformance_main
from tests.conftest import require

pytestmark = pytest.mark.integration

# Each a second or less with one thread; together: several steps (beamptied3: 3, acou2: 2), lower-case
# keywords and *endstep (boxprofile), a deck ccx runs although the plugin must leave it as it is
# (uprofile: an *END STEP without a *STEP), restart records in the deck itself (beamwrite, 1 step).
SAMPLE = {"boxprofile": None, "beamptied3": None, "acou2": None, "beamwrite": None,
          "uprofile": "*END STEP without a *STEP"}


@pytest.fixture(scope="module")
def decks():
    require(shutil.which("ccx") is not None, "CalculiX (apt-get install calculix-ccx)")
    found = suite_decks()
    require(bool(found), f"CalculiX's test suite under {SUITE} (apt-get install calculix-ccx-test)")
    return found


@pytest.mark.parametrize("name", list(SAMPLE))
def test_suite_deck_gives_the_same_dat_through_the_engine(name, decks, tmp_path):
    result = check_deck(name, decks[name], tmp_path, timeout=60)
    assert result.direct_ok, result
    assert result.identical, result
    if SAMPLE[name] is not None:  # run unchanged, and the run says why pause/restart is unavailable
        assert "restart unavailable" in result.note and SAMPLE[name] in result.note, result
    else:
        assert "restart unavailable" not in result.note, result


def test_include_tree_and_comma_ended_keyword_lines_give_the_same_dat(decks, tmp_path):
    """achtel2 split into a deck, a mesh include in a subfolder and a steps include, written the way users
    write decks (lower case, blanks, comma-ended keyword lines ccx reads without continuation)."""
    text = unpack(decks["achtel2"], tmp_path / "src", "achtel2").read_text()
    model, steps = text.split("*STEP", 1)
    mesh_start = model.index("*NODE")
    mesh_end = model.index("*MATERIAL")
    folder = tmp_path / "deck"
    (folder / "mesh").mkdir(parents=True)
    (folder / "mesh" / "Cube.inp").write_text(model[mesh_start:mesh_end])
    (folder / "steps.inp").write_text(
        "** the steps\n*step,\ninc = 100\n" + steps.split("\n", 1)[1].replace("*STATIC", "*static ,")
        .replace("*END STEP", "*end step"))
    deck = folder / "achtel2.inp"
    deck.write_text(model[:mesh_start] + "*Include, Input = mesh/Cube.inp\n" + model[mesh_end:]
                    + "  ** an indented comment\n*INCLUDE,INPUT=steps.inp\n")
    result = check_folder(deck, tmp_path / "work", timeout=60)
    assert result.direct_ok and result.identical, result
    assert "restart unavailable" not in result.note
    rendered = (tmp_path / "work" / "engine" / "run")
    assert (rendered / "mesh" / "Cube.inp").is_file()  # the include ccx opens in the run folder
    assert "*RESTART,WRITE,FREQUENCY=1\n*end step" in (rendered / "achtel2.inp").read_text()


def test_conformance_table_prints_rows_and_totals(decks, capsys):
    assert conformance_main(["--only", "uprofile", "beamread", "--jobs", "2", "--timeout", "60"]) == 0
    out = capsys.readouterr().out
    assert "uprofile" in out and "identical" in out
    assert "TOTAL decks 2, ccx runs directly 1, identical through the engine 1" in out


def test_a_deck_ccx_stops_on_is_not_counted_as_running_directly(tmp_path):
    require(shutil.which("ccx") is not None, "CalculiX (apt-get install calculix-ccx)")
    deck = tmp_path / "broken.inp"
    deck.write_text("*STEP\n*STATIC\n*CLOAD\nNOSUCHSET,1,1.\n*END STEP\n")
    assert run_direct(deck, timeout=30)[0] is False
