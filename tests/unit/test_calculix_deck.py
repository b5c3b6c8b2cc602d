"""CalculiX decks read as ccx reads them: case and blanks in keyword lines, comments, *HEADING lines, keyword
lines ending in a comma (no continuation in ccx), *INCLUDE trees, cards between steps; the only change made
to a deck is a restart record before each *END STEP, and a deck that cannot take it is named with the reason."""

from __future__ import annotations

import pytest

from solvers.calculix_deck import (
    RESTART_WRITE,
    DeckError,
    include_name,
    instrumented,
    read_deck,
    restart_deck,
    structure,
)


def no_includes(name: str) -> str:
    raise AssertionError(f"unexpected include {name}")


def without_records(text: str) -> str:
    """The instrumented text minus the lines the plugin inserted."""
    return "".join(line for line in text.splitlines(keepends=True) if line.rstrip("\r\n") != RESTART_WRITE)


MIXED = """*Heading
 *STEP is a title line here, not a card
*node
1, 0,0,0
 ** an indented comment *END STEP
*step, nlgeom, inc = 100
*Static
0.1, 2.
*End Step
*Boundary , op = new
*Boundary
1,1,3
*STEP,
NLGEOM
*dynamic,
0.1,0.5
*RESTART,WRITE,
FREQUENCY=2
*endstep
"""


def test_keywords_are_read_as_ccx_reads_them_case_blanks_comments_heading():
    deck = read_deck(MIXED, no_includes)
    found = structure(deck)
    assert found.problem is None
    assert [s.period for s in found.steps] == [2.0, 0.5]
    assert [deck.lines[s.end[1]].raw.strip() for s in found.steps] == ["*End Step", "*endstep"]
    # a keyword line ending in a comma is complete in ccx: the next line is its data line
    assert deck.lines[13].card is None and deck.lines[13].text == "NLGEOM"
    assert deck.lines[7].text == "0.1,2." and deck.lines[5].params == ("NLGEOM", "INC=100")


def test_only_change_is_a_restart_record_before_each_end_step():
    deck = read_deck(MIXED, no_includes)
    text = instrumented(deck, structure(deck))
    assert without_records(text) == MIXED  # cards between steps, the user's *RESTART and its data line stay
    lines = text.splitlines()
    ends = [i for i, line in enumerate(lines) if line.lower().replace(" ", "") in ("*endstep",)]
    assert len(ends) == 2 and all(lines[i - 1] == RESTART_WRITE for i in ends)


def test_bytes_line_ends_and_latin1_survive():
    raw = "*HEADING\r\nMod\u00e8le \u00b5\r\n*STEP\r\n*STATIC\r\n*END STEP\r\n"
    deck = read_deck(raw, no_includes)
    text = instrumented(deck, structure(deck))
    assert text == raw.replace("*END STEP", RESTART_WRITE + "\r\n*END STEP")
    assert text.encode("latin-1").count(b"\r\n") == 6


@pytest.mark.parametrize("deck, reason", [
    ("*NODE\n1,0,0,0\n", "no *STEP"),
    ("*STEP\n*STATIC\n", "has no *END STEP"),
    ("*STEP\n*STATIC\n*STEP\n*STATIC\n*END STEP\n", "*STEP inside the step begun at the deck line 1"),
    ("*STEP\n*STATIC\n*END STEP\n*END STEP\n", "line 4: *END STEP without a *STEP"),
    ("*RESTART,READ,STEP=1\n*STEP\n*STATIC\n*END STEP\n", "continues a restart"),
    ("*STEP\n*STATIC\n*END STEP\n*AMPLITUDE,NAME=A\n0,0,1,1\n*STEP\n*STATIC\n*END STEP\n", "*AMPLITUDE after"),
])
def test_decks_that_cannot_take_restart_records_are_named_with_the_reason(deck, reason):
    assert reason in (structure(read_deck(deck, no_includes)).problem or "")


def test_a_change_friction_card_is_read_in_order_not_as_model_data():
    deck = "*STEP\n*STATIC\n*END STEP\n*STEP\n*CHANGE FRICTION,INTERACTION=SI\n*FRICTION\n0.3\n*STATIC\n*END STEP\n"
    assert structure(read_deck(deck, no_includes)).problem is None


TREE = {
    "mesh.inp": "*NODE\n1,0,0,0\n*HEADING\n",
    "steps/all.inp": "*step\n*static\n0.5,1.5\n*INCLUDE, INPUT = loads/cl.inp\n*end step\n",
    "loads/cl.inp": "*CLOAD\n1,1,1.\n",
}


def tree_opener(opened: list[str]):
    def open_include(name: str) -> str:
        opened.append(name)
        return TREE[name]
    return open_include


def test_include_tree_is_followed_and_files_holding_steps_are_written_in_place():
    main = "*INCLUDE,INPUT=mesh.inp\n title after the included *HEADING\n*Include, input=steps/all.inp\n"
    opened: list[str] = []
    deck = read_deck(main, tree_opener(opened))
    assert opened == ["mesh.inp", "steps/all.inp", "loads/cl.inp"]  # ccx's reading order, names' case kept
    assert deck.lines[1].card is None  # still *HEADING data: ccx carries the heading across the include
    found = structure(deck)
    assert found.problem is None and [s.period for s in found.steps] == [1.5]
    text = instrumented(deck, found)
    # the mesh (no step in it) stays an include; the steps file is written in place, its own include kept
    assert text.startswith("*INCLUDE,INPUT=mesh.inp\n")
    assert "*INCLUDE, INPUT = loads/cl.inp\n" + RESTART_WRITE + "\n*end step\n" in text
    assert "input=steps/all.inp (written in place)" in text and "*step\n*static\n0.5,1.5\n" in text


def test_include_names_as_includefilename_reads_them():
    assert include_name("*INCLUDE,INPUT=Sub/Mesh.inp") == "Sub/Mesh.inp"
    assert include_name('*INCLUDE,INPUT="a,b.inp"') == "a,b.inp"
    assert include_name("*INCLUDE") is None
    with pytest.raises(DeckError, match="without INPUT"):
        read_deck("*INCLUDE\n", no_includes)
    with pytest.raises(DeckError, match="nested more than 9"):
        read_deck("*INCLUDE,INPUT=self.inp\n", lambda name: "*INCLUDE,INPUT=self.inp\n")


def test_an_include_the_engine_cannot_read_leaves_the_deck_unchanged():
    found = structure(read_deck("*INCLUDE,INPUT=/elsewhere/m.inp\n*STEP\n*STATIC\n*END STEP\n", lambda n: None))
    assert "cannot read the file it includes (/elsewhere/m.inp" in (found.problem or "")


def test_restart_deck_carries_on_after_the_completed_step_with_the_cards_between_steps():
    deck = read_deck(MIXED, no_includes)
    text = instrumented(deck, structure(deck))
    again = read_deck(text, no_includes)
    out = restart_deck(again, structure(again), 1, "** header\n")
    assert out.startswith("** header\n*RESTART,READ\n*Boundary , op = new\n*Boundary\n1,1,3\n*STEP,\n")
    assert out.count(RESTART_WRITE) == 1 and out.endswith(RESTART_WRITE + "\n*endstep\n")


def test_instrumenting_twice_changes_nothing_more():
    deck = read_deck(MIXED, no_includes)
    once = instrumented(deck, structure(deck))
    again = read_deck(once, no_includes)
    assert instrumented(again, structure(again)) == once
