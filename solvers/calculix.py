"""CalculiX plugin: `ccx -i <job>` with OpenMP threads on one node; step-boundary stop and *RESTART,READ restarts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from orchestrator.model.errors import UserError

from .base import LaunchContext, Outcome, Prepared, Progress, RunFiles, RunMode, SolverOptions, SolverPlugin
from .vendor import (
    JOBNAME_PATTERN,
    InputFile,
    attempt_name,
    copy_input,
    failed_on,
    note_error,
    numbered,
    to_float,
    touch,
)

STOP_FILE = "e2e-stop"   # ccx reads no control file: run.sh stops it once the current step is saved
_KEYWORD = re.compile(r"^\*([A-Za-z][A-Za-z ]*)", re.I)
_TOTAL_TIME = re.compile(r"^ actual total time=\s*([-+0-9.eE]+)", re.M)
_RESIDUAL = re.compile(r"largest residual force=\s*([-+0-9.eE]+)")
_INCREMENT = re.compile(r"^ increment (\d+) attempt (\d+)", re.M)
_FINISHED = re.compile(r"^ Job finished", re.M)
_ERROR = re.compile(r"^\s*\*ERROR[^\n]*", re.M)
_STOPPED = re.compile(r"^ stopped on request after step (\d+)[^\n]*", re.M)
_PROCEDURES = ("STATIC", "DYNAMIC", "HEAT TRANSFER", "COUPLED TEMPERATURE-DISPLACEMENT", "VISCO",
               "UNCOUPLED TEMPERATURE-DISPLACEMENT", "CFD")


class CalculiXOptions(SolverOptions):
    """`solver:` block for CalculiX ccx (shared memory: runs on the first allocated node only)."""

    name: Literal["calculix"]
    input: InputFile(".inp")
    jobname: str = Field("job", pattern=JOBNAME_PATTERN, description="ccx -i <jobname>: names the output files")
    threads: int | None = Field(None, ge=1, le=1024, description="OMP_NUM_THREADS; the first node's cores by default")
    include_files: list[InputFile(".inp", ".nam", ".msh", ".dat", ".txt", ".bou", ".dfl", ".sur", ".equ")] = Field(
        default_factory=list, description="files the deck *INCLUDEs, copied next to it")


class CalculiX(SolverPlugin):
    name = "calculix"
    Options = CalculiXOptions
    summary = "CalculiX ccx -i <job> (OpenMP, one node); stop at a step boundary, restart by *RESTART,READ"
    cleanup_patterns = (STOP_FILE, "spooles.out")

    def prepare(self, options: CalculiXOptions, ctx: LaunchContext) -> Prepared:
        job = options.jobname
        for extra in options.include_files:
            copy_input(extra, ctx.run_dir, extra.name)
        if ctx.mode is RunMode.RESTART:
            deck = split_deck((ctx.run_dir / f"{job}.inp").read_text(errors="replace"))
            done = completed_steps(ctx.run_dir, job, deck.periods)
            rout = latest_restart(ctx.run_dir, job)
            if rout is None or done == 0:
                raise UserError("calculix: no completed step with a restart record (.rout) to restart from; "
                                "rerun instead")
            jobname = f"{job}_r{ctx.attempt}"
            (ctx.run_dir / f"{jobname}.rin").write_bytes(rout.read_bytes())
            (ctx.run_dir / f"{jobname}.inp").write_text(
                f"** restart written for {ctx.job_id}/{ctx.run_id}, attempt {ctx.attempt}: "
                f"steps {done + 1}.. after {done} completed step(s), from {rout.name}\n"
                "*RESTART,READ\n" + "".join(deck.steps[done:]))
        else:
            deck = split_deck(options.input.read_text(errors="replace"))
            jobname = job
            (ctx.run_dir / f"{job}.inp").write_text(deck.model + "".join(deck.steps))
        threads = options.threads or ctx.nodes[0].slots
        log_file = attempt_name("ccx", ".log", ctx.attempt)
        info = {}
        if len(ctx.nodes) > 1:
            info["nodes"] = (f"ccx is shared-memory only: it runs on {ctx.nodes[0].name}; "
                             f"{len(ctx.nodes) - 1} other allocated node(s) stay idle")
        return Prepared(
            template="calculix/run.sh.j2",
            context={"jobname": jobname, "threads": threads, "log_file": log_file, "stop_file": STOP_FILE},
            log_file=log_file,
            progress_total=sum(deck.periods) or None,
            env={},
            info=info,
        )

    def parse_progress(self, text: str, last: Progress | None) -> Progress | None:
        progress = (last or Progress()).model_copy(deep=True)
        found = False
        for value in _TOTAL_TIME.findall(text):
            progress.step, found = to_float(value), True
        for value in _RESIDUAL.findall(text):
            progress.residuals, found = {"force": float(value)}, True
        if (m := list(_INCREMENT.finditer(text))):
            progress.message, found = f"increment {m[-1].group(1)} attempt {m[-1].group(2)}", True
        if _FINISHED.search(text):
            progress.converged, progress.message, found = True, "Job finished", True
        found = note_error(progress, _ERROR, text) or found
        return progress if found else None

    def judge_exit(self, exit_code: int, log_tail: str) -> Outcome:
        # ccx exits 0 after *ERROR (a missing input, say) and may segfault on a bad deck: the line decides.
        if failed := failed_on(_ERROR, log_tail, exit_code):
            return failed
        if _FINISHED.search(log_tail):
            return Outcome(True, "Job finished")
        if (m := _STOPPED.search(log_tail)):
            return Outcome(True, m.group(0).strip())
        return Outcome(False, f"ccx ended without 'Job finished' (exit code {exit_code})")

    def request_stop(self, files: RunFiles) -> bool:
        # run.sh lets the current step end (its restart record is written), then stops ccx.
        return touch(files, STOP_FILE)

    def latest_checkpoint(self, run_dir: Path) -> str | None:
        inputs = sorted(p for p in run_dir.glob("*.inp") if not re.search(r"_r\d+\.inp$", p.name))
        for inp in inputs:
            rout = latest_restart(run_dir, inp.stem)
            if rout is not None:
                done = completed_steps(run_dir, inp.stem, split_deck(inp.read_text(errors="replace")).periods)
                return f"after step {done} ({rout.name})"
        return None


class Deck:
    """A ccx input split into the model part and its *STEP ... *END STEP blocks."""

    def __init__(self, model: str, steps: list[str], periods: list[float]):
        self.model, self.steps, self.periods = model, steps, periods


def split_deck(text: str) -> Deck:
    """Split a deck; every step gets *RESTART,WRITE,FREQUENCY=1 so each completed step can be restarted from."""
    lines = text.splitlines(keepends=True)
    model: list[str] = []
    steps: list[list[str]] = []
    current: list[str] | None = None
    for line in lines:
        word = _keyword(line)
        if word == "STEP":
            current = [line]
            continue
        if current is None:
            if word != "RESTART":  # the model's own restart requests are replaced by one per step
                model.append(line)
            continue
        if word == "RESTART":
            continue
        if word == "END STEP":
            current.append("*RESTART,WRITE,FREQUENCY=1\n")
            current.append(line if line.endswith("\n") else line + "\n")
            steps.append(current)
            current = None
            continue
        current.append(line)
    if not steps:
        raise UserError("calculix: the input has no *STEP ... *END STEP block")
    return Deck("".join(model), ["".join(s) for s in steps], [_period(s) for s in steps])


def _keyword(line: str) -> str | None:
    if line.startswith("**"):
        return None
    m = _KEYWORD.match(line)
    return m.group(1).strip().upper() if m else None


def _period(step: list[str]) -> float:
    """The step's time period: the second number on the data line after its procedure keyword (default 1)."""
    for i, line in enumerate(step):
        if _keyword(line) in _PROCEDURES:
            for data in step[i + 1:]:
                if data.startswith("**"):
                    continue
                if data.startswith("*"):
                    break
                fields = [f.strip() for f in data.split(",")]
                return to_float(fields[1]) or 1.0 if len(fields) > 1 and fields[1] else 1.0
            return 1.0
    return 0.0


def latest_restart(run_dir: Path, job: str) -> Path | None:
    """The restart record of the most recent attempt that wrote one."""
    chain = numbered(run_dir.glob(f"{job}_r*.rout"), rf"^{re.escape(job)}_r(\d+)\.rout$")
    candidates = [p for _, p in reversed(chain)] + [run_dir / f"{job}.rout"]
    return next((p for p in candidates if p.is_file() and p.stat().st_size > 0), None)


def completed_steps(run_dir: Path, job: str, periods: list[float]) -> int:
    """How many steps have ended, from the .sta tables of every attempt (STEP and STEP TIME columns)."""
    last_time: dict[int, float] = {}
    chain = numbered(run_dir.glob(f"{job}_r*.sta"), rf"^{re.escape(job)}_r(\d+)\.sta$")
    for sta in [run_dir / f"{job}.sta", *(p for _, p in chain)]:
        if not sta.is_file():
            continue
        for line in sta.read_text(errors="replace").splitlines():
            fields = line.split()
            if len(fields) == 7 and fields[0].isdigit():
                last_time[int(fields[0])] = float(fields[5])
    done = 0
    for number, period in enumerate(periods, start=1):
        if number in last_time and last_time[number] >= period * (1 - 1e-6):
            done = number
        elif number not in last_time:
            break
    return done
