"""CalculiX decks read the way ccx 2.x reads them (readinput.c): keyword lines, *INCLUDE trees, the step
structure, and the one change the plugin makes to a deck (a restart record at the end of every step).

How ccx reads a line, and so how this module does:
- blanks and tabs are removed, then the line is upper-cased, except a file name after FILE=, INPUT=,
  OUTPUT= or FILENAME= (up to the next comma); the data lines after *HEADING are kept as they are;
- empty lines and lines starting with ** (after the blanks are gone) are comments;
- a line starting with * is a keyword line; its first comma-separated field names the card (*END STEP and
  *ENDSTEP are the same card), the others are its parameters;
- a keyword line is one line: ccx 2.20 has no continuation lines. A keyword line ending in a comma is
  complete, and the next line is a data line of that card (ccx warns "Card image cannot be interpreted" when
  it is `NLGEOM`, say). This module reads it the same way, so it never moves a line ccx reads as data;
- *INCLUDE, INPUT=name opens `name` relative to ccx's working folder (the run directory, which holds the
  deck), at most 9 levels deep; the included lines are read as if they stood in place of the *INCLUDE line.

ccx reads model cards (nodes, sets, materials, amplitudes...) before all other cards whatever their place
in the deck (keystart.f); a restart deck (*RESTART,READ) gets them from the restart record instead, so a
deck that defines any after its first *STEP is left unchanged (its restart deck could not be built).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

RESTART_WRITE = "*RESTART,WRITE,FREQUENCY=1"
MAX_INCLUDE_DEPTH = 9  # readinput.c: "include statements can not be cascaded over more than 9 levels"
_FILE_MARKERS = ("FILE=", "INPUT=", "OUTPUT=", "FILENAME=")
# keystart.f: the cards read before every other one (and restored by *RESTART,READ), as ccx spells them
_MODEL_CARDS = frozenset({
    "NODE", "USERELEMENT", "ELEMENT", "NSET", "ELSET", "SURFACE", "TRANSFORM", "MATERIAL", "DISTRIBUTION",
    "ORIENTATION", "TIE", "SURFACEINTERACTION", "INITIALCONDITIONS", "AMPLITUDE", "CONTACTPAIR", "COUPLING",
    "CONDUCTIVITY", "CREEP", "CYCLICHARDENING", "DAMPING", "ELASTIC", "DEFORMATIONPLASTICITY", "DENSITY",
    "DEPVAR", "ELECTRICALCONDUCTIVITY", "EXPANSION", "FLUIDCONSTANTS", "HYPERELASTIC", "HYPERFOAM",
    "MAGNETICPERMEABILITY", "PLASTIC", "SPECIFICGASCONSTANT", "SPECIFICHEAT", "USERMATERIAL",
    "CONTACTDAMPING", "FRICTION", "GAPCONDUCTANCE", "GAPHEATGENERATION", "SURFACEBEHAVIOR",
})
_PROCEDURES = frozenset({"STATIC", "DYNAMIC", "HEATTRANSFER", "COUPLEDTEMPERATURE-DISPLACEMENT", "VISCO",
                         "UNCOUPLEDTEMPERATURE-DISPLACEMENT", "CFD"})


class DeckError(ValueError):
    """The deck is one ccx itself would stop on (a missing include, an *INCLUDE without a file name)."""


@dataclass(frozen=True)
class Line:
    """One physical line of a deck file and what ccx makes of it."""

    raw: str                 # as in the file, with its line end
    number: int              # 1-based, in its file
    text: str | None         # the significant characters; None for a blank or comment line
    card: str | None = None  # a keyword line's card name, blanks removed, upper case ("ENDSTEP")
    params: tuple[str, ...] = ()


@dataclass
class DeckFile:
    """A deck file and the files its *INCLUDE lines open (None: a file the engine cannot read)."""

    name: str                # as the including line names it; "" for the deck itself
    lines: list[Line] = field(default_factory=list)
    includes: dict[int, DeckFile | None] = field(default_factory=dict)  # line index -> included file

    def where(self, index: int) -> str:
        return f"{self.name or 'the deck'} line {self.lines[index].number}"


@dataclass(frozen=True)
class Step:
    card: tuple[DeckFile, int]   # its *STEP line
    end: tuple[DeckFile, int]    # its *END STEP line
    period: float                # the procedure's time period (0 for steps without one)


@dataclass
class Structure:
    """The deck's steps, and why it cannot be instrumented (None: it can)."""

    steps: list[Step]
    problem: str | None


# An opener returns an include's text, or None when the engine cannot read it (outside the deck's folder);
# it raises DeckError for a file that is not there at all.
Opener = Callable[[str], "str | None"]


def read_deck(text: str, opener: Opener) -> DeckFile:
    """The deck and its *INCLUDE tree, line by line as ccx reads them."""
    state = {"heading": False}
    return _read_file("", text, opener, state, depth=0)


def _read_file(name: str, text: str, opener: Opener, state: dict[str, bool], depth: int) -> DeckFile:
    deck = DeckFile(name)
    for number, raw in enumerate(text.splitlines(keepends=True), start=1):
        line = _read_line(raw, number, state)
        deck.lines.append(line)
        if line.card is not None and line.text is not None and line.text.startswith("*INCLUDE"):
            included = include_name(line.text)
            if included is None:
                raise DeckError(f"{name or 'the deck'} line {number}: *INCLUDE without INPUT=<file> "
                                "(ccx stops on it)")
            if depth + 1 > MAX_INCLUDE_DEPTH:
                raise DeckError(f"{name or 'the deck'} line {number}: *INCLUDE nested more than "
                                f"{MAX_INCLUDE_DEPTH} levels deep (ccx allows {MAX_INCLUDE_DEPTH}; a loop?)")
            body = opener(included)
            deck.includes[len(deck.lines) - 1] = (
                None if body is None else _read_file(included, body, opener, state, depth + 1))
    return deck


def _read_line(raw: str, number: int, state: dict[str, bool]) -> Line:
    if state["heading"] and raw[:1] == "*" and raw[1:2] != "*":
        state["heading"] = False
    # ccx stops a line at its first NUL, CR or LF
    body = raw
    for end in ("\0", "\r", "\n"):
        body = body.split(end, 1)[0]
    if not state["heading"]:
        body = body.replace(" ", "").replace("\t", "")
    if not body or body.startswith("**"):
        return Line(raw, number, None)
    text = body if state["heading"] else _upper_except_files(body)
    if text.startswith("*HEADING"):
        state["heading"] = True
    if not text.startswith("*"):
        return Line(raw, number, text)
    fields = text[1:].split(",")
    return Line(raw, number, text, fields[0], tuple(fields[1:]))


def _upper_except_files(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if "".join(out[-9:]).endswith(_FILE_MARKERS):
            end = text.find(",", i)
            end = len(text) if end < 0 else end
            out.append(text[i:end])  # a file name keeps its case
            i = end
            if i >= len(text):
                break
        out.append(text[i].upper())
        i += 1
    return "".join(out)


def include_name(text: str) -> str | None:
    """The file an *INCLUDE line opens (includefilename.f: after the first '=', or between quotes)."""
    if "=" not in text:
        return None
    value = text.split("=", 1)[1]
    if value.startswith('"'):
        value = value[1:].split('"', 1)[0] if '"' in value[1:] else ""
    return value or None


def walk(deck: DeckFile) -> Iterator[tuple[DeckFile, int, Line]]:
    """Every line in the order ccx reads them: an *INCLUDE line is followed by the included file's lines."""
    for index, line in enumerate(deck.lines):
        yield deck, index, line
        child = deck.includes.get(index)
        if child is not None:
            yield from walk(child)


def structure(deck: DeckFile) -> Structure:
    """The steps, with the first reason (if any) that the plugin must leave the deck as it is."""
    steps: list[Step] = []
    problem: str | None = None
    open_step: tuple[DeckFile, int] | None = None
    changed_friction = changed_behaviour = False
    procedure_seen = False
    period = 0.0
    for owner, index, line in walk(deck):
        if index in owner.includes and owner.includes[index] is None:
            problem = problem or (f"{owner.where(index)}: the engine cannot read the file it includes "
                                  f"({include_name(line.text or '')}: outside the deck's folder)")
        card = line.card
        if card is None:
            if procedure_seen and open_step is not None and line.text is not None:
                period, procedure_seen = _period(line.text), False
            continue
        procedure_seen = False
        changed_friction = changed_friction or card == "CHANGEFRICTION"
        changed_behaviour = changed_behaviour or card == "CHANGESURFACEBEHAVIOR"
        if card == "RESTART" and any(p.startswith("READ") for p in line.params):
            problem = problem or f"{owner.where(index)}: the deck itself continues a restart (*RESTART,READ)"
        elif card == "STEP":
            if open_step is not None:
                problem = problem or f"{owner.where(index)}: *STEP inside the step begun at {_at(open_step)}"
            open_step, period = (owner, index), 0.0
        elif card == "ENDSTEP":
            if open_step is None:
                problem = problem or f"{owner.where(index)}: *END STEP without a *STEP"
            else:
                steps.append(Step(open_step, (owner, index), period))
                open_step = None
        elif card in _PROCEDURES and open_step is not None:
            procedure_seen, period = True, 1.0  # no data line: ccx's default period
        elif steps or open_step is not None:
            if _is_model_card(card, changed_friction, changed_behaviour):
                problem = problem or (f"{owner.where(index)}: *{card} after the first *STEP (ccx reads it "
                                      "before every step, so a restart deck could not repeat the steps)")
    if open_step is not None:
        problem = problem or f"the step begun at {_at(open_step)} has no *END STEP"
    if not steps:
        problem = problem or "the deck has no *STEP ... *END STEP block"
    return Structure(steps, problem)


def _is_model_card(card: str, changed_friction: bool, changed_behaviour: bool) -> bool:
    if card == "FRICTION" and changed_friction or card == "SURFACEBEHAVIOR" and changed_behaviour:
        return False  # a *CHANGE FRICTION's own card, read in order
    # *KINEMATIC and *DISTRIBUTING belong to the *COUPLING before them (readinput.c); *DISTRIBUTING COUPLING not
    return card in _MODEL_CARDS or card in ("KINEMATIC", "DISTRIBUTING")


def _at(where: tuple[DeckFile, int]) -> str:
    return where[0].where(where[1])


def _period(data: str) -> float:
    """The time period: the second field of the procedure's data line (1.0 when empty)."""
    fields = data.split(",")
    try:
        return float(fields[1]) if len(fields) > 1 and fields[1] else 1.0
    except ValueError:
        return 1.0


def instrumented(deck: DeckFile, found: Structure) -> str:
    """The deck with a restart record written at the end of every step (once: an instrumented deck comes back
    the same). Files holding an *END STEP are written in place of their *INCLUDE line (ccx reads them as if
    they stood there); the others stay."""
    ends = {(id(owner), index) for owner, index in (s.end for s in found.steps)}
    inline = {id(owner) for owner, _ in (s.end for s in found.steps)}
    _mark_ancestors(deck, inline)
    return _write(deck, ends, inline)


def _mark_ancestors(deck: DeckFile, inline: set[int]) -> bool:
    holds = id(deck) in inline
    for child in deck.includes.values():
        if child is not None and _mark_ancestors(child, inline):
            holds = True
    if holds:
        inline.add(id(deck))
    return holds


def _write(deck: DeckFile, ends: set[tuple[int, int]], inline: set[int]) -> str:
    out: list[str] = []
    for index, line in enumerate(deck.lines):
        child = deck.includes.get(index)
        if child is not None and id(child) in inline:
            text = _write(child, ends, inline)
            out.append(f"** e2e: {line.raw.strip()} (written in place)\n" + text
                       + ("" if text.endswith(("\n", "\r")) or not text else "\n"))
            continue
        already = index > 0 and deck.lines[index - 1].raw.rstrip("\r\n") == RESTART_WRITE  # instrumented before
        if (id(deck), index) in ends and not already:
            out.append(RESTART_WRITE + _line_end(line.raw))
        out.append(line.raw)
    return "".join(out)


def _line_end(raw: str) -> str:
    return "\r\n" if raw.endswith("\r\n") else "\n"


def restart_deck(deck: DeckFile, found: Structure, done: int, header: str) -> str:
    """A deck that reads the restart record and carries on after the `done`th step: everything after that
    step's *END STEP (cards between steps included), behind *RESTART,READ."""
    owner, index = found.steps[done - 1].end
    if owner is not deck:
        raise DeckError("the step ends in an included file: the deck was not instrumented by the engine")
    return header + "*RESTART,READ\n" + "".join(line.raw for line in deck.lines[index + 1:])


def include_files(deck: DeckFile) -> list[str]:
    """The names of every file the tree includes (readable or not), in reading order."""
    names = []
    for owner, index, _ in walk(deck):
        if index in owner.includes:
            child = owner.includes[index]
            names.append(child.name if child is not None else include_name(owner.lines[index].text or "") or "")
    return names
