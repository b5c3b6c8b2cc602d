"""Parsers of solvers' monitor files (tables the solver appends to) into named series of (x, y) points.

Each parser folds the new complete lines of one file into points, keeping what it must remember between reads
(the column names of a header read earlier, a running row count) in `state`, a JSON-able dict the engine
stores per file. Non-numeric cells (a solver's name, `true`/`false`) are skipped, never guessed at.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

Points = dict[str, list[list[float]]]

_TOKEN = re.compile(r"\([^)]*\)|\S+")
_COMPONENTS = ("x", "y", "z")
# Function-object files whose name adds nothing to the function object's own (fc/Cd, not fc/coefficient/Cd).
_MAIN_FILES = {"coefficient", "forceCoeffs", "solverInfo", "residuals", "fieldMinMax"}
_SKIPPED_COLUMNS = ("location(",)  # fieldMinMax's cell positions: three coordinates, not a monitored value


def number(text: str) -> float | None:
    """A float cell, or None (a word, a boolean). nan and inf are kept: a diverging run writes them."""
    try:
        return float(text)
    except ValueError:
        return None


def _add(points: Points, name: str, x: float, y: float) -> None:
    points.setdefault(name, []).append([x, y])


# -- OpenFOAM function objects: postProcessing/<name>/<startTime>/<file>
def foam_prefix(rel: str) -> str | None:
    """The series prefix of a function-object output (`fc` for postProcessing/fc/0/coefficient.dat,
    `probes1/p` for postProcessing/probes1/0/p); None for a file that is not one."""
    parts = PurePosixPath(rel).parts
    if len(parts) != 4 or parts[0] != "postProcessing" or number(parts[2]) is None:
        return None
    name = PurePosixPath(parts[3])
    if name.suffix not in ("", ".dat"):
        return None  # a surface, a VTK file, a sample set: not a table appended per step
    stem = name.stem
    if stem.endswith(f"_{parts[2]}"):  # a restart at a time whose folder had the file: coefficient_100.dat
        stem = stem[:-len(parts[2]) - 1]
    return parts[1] if stem in _MAIN_FILES else f"{parts[1]}/{stem}"


def _header_names(tokens: list[str]) -> list[str]:
    """Column names after `Time`; a parenthesised group `(total_x total_y total_z)` names one vector cell."""
    return tokens[1:]


def parse_foam_table(rel: str, text: str, state: dict[str, Any]) -> Points:
    """A function object's .dat table (forces, forceCoeffs, probes, fieldMinMax, solverInfo): `# Time ...`
    header (or probes' `# Probe 0 1 ...`), whitespace columns, vectors in parentheses."""
    prefix = foam_prefix(rel)
    if prefix is None:
        state["skip"] = True
        return {}
    points: Points = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            tokens = _TOKEN.findall(stripped[1:])
            if tokens and tokens[0] == "Time" and len(tokens) > 1:
                state["columns"] = _header_names(tokens)
            elif tokens and tokens[0] == "Probe" and all(t.isdigit() for t in tokens[1:]) and len(tokens) > 1:
                state["columns"] = tokens[1:]
            continue
        cells = _TOKEN.findall(stripped)
        x = number(cells[0])
        columns = state.get("columns")
        if x is None or not columns or len(columns) != len(cells) - 1:
            continue
        row_prefix = prefix
        if "field" in columns:  # fieldMinMax: one row per field, the field named in its own cell
            row_prefix = f"{prefix}/{cells[1 + columns.index('field')]}"
        for column, cell in zip(columns, cells[1:], strict=True):
            if column == "field" or column.startswith(_SKIPPED_COLUMNS):
                continue
            _add_cell(points, row_prefix, column, cell, x)
    return points


def _add_cell(points: Points, prefix: str, column: str, cell: str, x: float) -> None:
    if cell.startswith("("):  # a vector: one series per component
        values = cell[1:-1].split()
        names = column[1:-1].split() if column.startswith("(") else \
            [f"{column}_{_COMPONENTS[i] if len(values) == 3 else i}" for i in range(len(values))]
        for name, value in zip(names, values, strict=False):
            if (y := number(value)) is not None:
                _add(points, f"{prefix}/{name}", x, y)
    elif (y := number(cell)) is not None:
        _add(points, f"{prefix}/{column}", x, y)


# -- CalculiX: <job>.sta (one row per increment) and <job>.cvg (one row per iteration)
_STA_COLUMNS = ("step", "increment", "attempts", "iterations", "total_time", "step_time", "increment_time")
_CVG_COLUMNS = ("step", "increment", "attempt", "iteration", "contact_elements", "residual_force",
                "correction_disp", "residual_flux", "correction_temp")


def parse_ccx_sta(text: str, state: dict[str, Any]) -> Points:
    """`.sta`: STEP INC ATT ITRS TOT TIME STEP TIME INC TIME, one row per converged increment; x is the
    increment's total time."""
    points: Points = {}
    for line in text.splitlines():
        cells = [number(c) for c in line.split()]
        if len(cells) != len(_STA_COLUMNS) or any(c is None for c in cells):
            continue  # the two header lines
        row = dict(zip(_STA_COLUMNS, cells, strict=True))
        x = float(row["total_time"])  # type: ignore[arg-type]
        for name in ("iterations", "increment_time", "step_time", "step"):
            _add(points, f"increments/{name}", x, float(row[name]))  # type: ignore[arg-type]
    return points


def parse_ccx_cvg(text: str, state: dict[str, Any]) -> Points:
    """`.cvg`: STEP INC ATT ITER CONT.EL. RESID.FORCE CORR.DISP RESID.FLUX CORR.TEMP per equilibrium
    iteration; x counts iterations over the whole run (kept in state, since each read sees only new rows)."""
    points: Points = {}
    count = int(state.get("rows", 0))
    for line in text.splitlines():
        cells = [number(c) for c in line.split()]
        if len(cells) != len(_CVG_COLUMNS) or any(c is None for c in cells):
            continue  # the four header lines
        count += 1
        row = dict(zip(_CVG_COLUMNS, cells, strict=True))
        for name in _CVG_COLUMNS[4:]:
            _add(points, f"convergence/{name}", float(count), float(row[name]))  # type: ignore[arg-type]
    state["rows"] = count
    return points


# -- Fluent report files (<name>.out) and STAR-CCM+ monitor exports (<name>.csv)
_QUOTED = re.compile(r'"([^"]*)"')


def parse_fluent_report(rel: str, text: str, state: dict[str, Any]) -> Points:
    """A Fluent report file: a quoted title line, then `"Iteration" "cd-1" ...` and the same names in
    parentheses, then one whitespace row per iteration (or time step)."""
    stem = PurePosixPath(rel).stem
    points: Points = {}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith('"') or stripped.startswith("("):
            names = _QUOTED.findall(stripped)
            if len(names) > 1 and not stripped.startswith("("):
                state["columns"] = names[1:]
            continue
        cells = stripped.split()
        columns = state.get("columns")
        if not cells or not columns or len(cells) != len(columns) + 1 or (x := number(cells[0])) is None:
            continue
        for column, cell in zip(columns, cells[1:], strict=True):
            if (y := number(cell)) is not None:
                _add(points, f"{stem}/{column}", x, y)
    return points


def parse_star_csv(rel: str, text: str, state: dict[str, Any]) -> Points:
    """A STAR-CCM+ monitor export: a quoted CSV header `"Iteration","Continuity",...`, one row per iteration."""
    stem = PurePosixPath(rel).stem
    points: Points = {}
    for line in text.splitlines():
        cells = [c.strip().strip('"') for c in line.split(",")]
        if len(cells) < 2:
            continue
        if (x := number(cells[0])) is None:
            state["columns"] = cells[1:]
            continue
        columns = state.get("columns")
        if not columns or len(columns) != len(cells) - 1:
            continue
        for column, cell in zip(columns, cells[1:], strict=True):
            if (y := number(cell)) is not None:
                _add(points, f"{stem}/{column}", x, y)
    return points
