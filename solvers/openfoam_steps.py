"""The OpenFOAM plugin's `steps:` option: one pre-processing step, the checks on the list, and each step's log."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .openfoam_allrun import BUILTINS, AllrunError, derive, file_args_problem

WORD = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
LOG = r"^log\.[A-Za-z0-9][A-Za-z0-9_.+-]{0,80}$"
MAX_STEPS = 64
# Any text but control characters: the renderer quotes every argument as one shell word.
StepArg = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]


class Step(BaseModel):
    """One step before the solver: a utility of the case (setFields, topoSet, snappyHexMesh ...) with its
    arguments, or one of the built-ins restore0Dir (0.orig copied to 0, as RunFunctions does), cp and mv (files
    inside the case)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    run: str = Field(pattern=WORD, description="the utility, e.g. setFields; or restore0Dir, cp, mv")
    args: list[StepArg] = Field(default_factory=list, max_length=64, description="its arguments, each one word")
    parallel: bool = Field(False, description="run it with mpirun over the allocation, after decomposition "
                                              "(-parallel is added); serially when the job has one process")
    log: str | None = Field(None, pattern=LOG, description="its log file; log.<run> by default (log.<run>.2 for "
                                                           "the second step running the same utility)")

    @model_validator(mode="after")
    def _builtins(self) -> Step:
        if self.run in BUILTINS and self.parallel:
            raise ValueError(f"{self.run} is an engine built-in and runs once, not in parallel")
        if self.run == "restore0Dir" and self.args:
            raise ValueError("restore0Dir takes no arguments")
        if self.run in ("cp", "mv") and (problem := file_args_problem(self.run, list(self.args))):
            raise ValueError(problem)
        return self


def check_steps(steps: list[Step], application: str) -> None:
    """The list as a whole: serial steps first (the engine decomposes between them and the parallel ones), and
    no two logs alike, none the solver's."""
    seen_parallel = False
    for i, step in enumerate(steps):
        if step.parallel:
            seen_parallel = True
        elif seen_parallel:
            raise ValueError(f"step {i + 1} ({step.run}) is serial after a parallel step: the engine runs the "
                             "serial steps, decomposes, then runs the parallel ones")
    logs = step_logs(steps)
    if len(set(logs.values())) != len(steps):
        raise ValueError("two steps write the same log; give one of them another `log:`")
    if f"log.{application}" in logs.values():
        raise ValueError(f"a step's log is the solver's (log.{application}); give it another `log:`")


def step_logs(steps: list[Step]) -> dict[str, str]:
    """Step name -> log file, in run order: the step's own `log`, else log.<run>, log.<run>.2 for the second
    step running the same utility, and so on. The name (the log file without `log.`) is what
    `e2e logs --step` takes."""
    out: dict[str, str] = {}
    taken: set[str] = {s.log for s in steps if s.log}
    for step in steps:
        name = step.log
        if name is None:
            name, n = f"log.{step.run}", 1
            while name in taken:
                n += 1
                name = f"log.{step.run}.{n}"
        taken.add(name)
        out[name[len("log."):]] = name
    return out


def derived_steps(case: Path, application: str, controldict_application: str | None) -> list[Step] | None:
    """The steps of the case's Allrun (or Allrun.pre), or None without either; ValueError (naming the file, the
    line number and the line) when a line is not understood or the Allrun runs another application."""
    try:
        found = derive(case, application)
    except AllrunError as exc:
        raise ValueError(str(exc)) from None
    if found is None:
        return None
    if found.solver_line is not None and controldict_application not in (None, application):
        raise ValueError(f"the case's Allrun runs the controlDict's application {controldict_application!r} "
                         f"(line {found.solver_line}), but solver.application is {application!r}")
    try:
        return [Step(**raw) for raw in found.steps]
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"{found.source}: a step it runs is not valid: {first['msg']}") from None


def template_steps(steps: list[Step], parallel_ok: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(serial, parallel) steps as the run template takes them. Without a decomposition (one process) the
    parallel steps run serially, in order, after the serial ones."""
    logs = list(step_logs(steps).values())
    serial: list[dict[str, Any]] = []
    parallel: list[dict[str, Any]] = []
    for step, log in zip(steps, logs, strict=True):
        args = [a for a in step.args if a != "-parallel"]  # the template adds it where it applies
        entry = {"run": step.run, "args": args, "log": log, "restore0": step.run == "restore0Dir",
                 "failed": f"{step.run} failed: see {log}"}
        (parallel if step.parallel and parallel_ok else serial).append(entry)
    return serial, parallel


STEP_FAILED = re.compile(r"^(\S+ failed: see log\.\S+)\s*$", re.M)
