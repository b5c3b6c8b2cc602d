"""CalculiX plugin: `ccx -i <job>` with OpenMP threads on one node; step-boundary stop and *RESTART,READ restarts."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import Field

from orchestrator.model.errors import UserError

from .base import (
    DesktopApp,
    DesktopContext,
    LaunchContext,
    Outcome,
    Prepared,
    Progress,
    RunFiles,
    RunMode,
    SolverOptions,
    SolverPlugin,
    copy_if_absent,
    terminal_and_files,
)
from .calculix_deck import DeckError, DeckFile, instrumented, read_deck, restart_deck, structure
from .series import parse_ccx_cvg, parse_ccx_sta
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
# Written (with the reason) when the deck runs exactly as given: no restart records, no graceful stop.
NO_RESTART = "e2e-restart-unavailable"
_TOTAL_TIME = re.compile(r"^ actual total time=\s*([-+0-9.eE]+)", re.M)
_RESIDUAL = re.compile(r"largest residual force=\s*([-+0-9.eE]+)")
_INCREMENT = re.compile(r"^ increment (\d+) attempt (\d+)", re.M)
_FINISHED = re.compile(r"^ Job finished", re.M)
_ERROR = re.compile(r"^\s*\*ERROR[^\n]*", re.M)
_STOPPED = re.compile(r"^ stopped on request after step (\d+)[^\n]*", re.M)


class CalculiXOptions(SolverOptions):
    """`solver:` block for CalculiX ccx (shared memory: runs on the first allocated node only)."""

    name: Literal["calculix"]
    input: InputFile(".inp")
    jobname: str = Field("job", pattern=JOBNAME_PATTERN, description="ccx -i <jobname>: names the output files")
    threads: int | None = Field(None, ge=1, le=1024, description="OMP_NUM_THREADS; the first node's cores by default")
    include_files: list[InputFile(".inp", ".nam", ".msh", ".dat", ".txt", ".bou", ".dfl", ".sur", ".equ")] = Field(
        default_factory=list, description="files the deck *INCLUDEs from elsewhere, copied into the run by name "
                                          "(includes in the deck's folder are found and copied by themselves)")


class CalculiX(SolverPlugin):
    name = "calculix"
    Options = CalculiXOptions
    summary = "CalculiX ccx -i <job> (OpenMP, one node); stop at a step boundary, restart by *RESTART,READ"
    cleanup_patterns = (STOP_FILE, "spooles.out")

    def prepare(self, options: CalculiXOptions, ctx: LaunchContext) -> Prepared:
        job = options.jobname
        for extra in options.include_files:
            copy_input(extra, ctx.run_dir, extra.name)
        info = {}
        if ctx.mode is RunMode.RESTART:
            jobname, periods = self._restart_deck(job, ctx)
        else:
            jobname = job
            text = options.input.read_bytes().decode("latin-1")  # bytes in, the same bytes out
            deck = _read(text, _opener(ctx.run_dir, options.input.parent))
            found = structure(deck)
            periods = [s.period for s in found.steps]
            if found.problem is None:
                _write(ctx.run_dir / f"{job}.inp", instrumented(deck, found))
            else:  # as ccx would read it: no restart records, no stop at a step boundary
                _write(ctx.run_dir / f"{job}.inp", text)
                (ctx.run_dir / NO_RESTART).write_text(found.problem + "\n")
                info["restart"] = unavailable(found.problem)
        threads = options.threads or ctx.nodes[0].slots
        log_file = attempt_name("ccx", ".log", ctx.attempt)
        if len(ctx.nodes) > 1:
            info["nodes"] = (f"ccx is shared-memory only: it runs on {ctx.nodes[0].name}; "
                             f"{len(ctx.nodes) - 1} other allocated node(s) stay idle")
        return Prepared(
            template="calculix/run.sh.j2",
            context={"jobname": jobname, "threads": threads, "log_file": log_file, "stop_file": STOP_FILE},
            log_file=log_file,
            progress_total=sum(periods) or None,
            env={},
            info=info,
        )

    def _restart_deck(self, job: str, ctx: LaunchContext) -> tuple[str, list[float]]:
        """Write <job>_r<attempt>.inp (*RESTART,READ and the steps not yet done) and its .rin; its name."""
        if (why := no_restart_reason(ctx.run_dir)) is not None:
            raise UserError(f"calculix: pause/restart is unavailable for this deck ({why}); rerun instead")
        deck = _read(_text(ctx.run_dir / f"{job}.inp"), _opener(ctx.run_dir, None))
        found = structure(deck)
        if found.problem is None:  # every remaining step writes its record, whoever wrote the first deck
            deck = _read(instrumented(deck, found), _opener(ctx.run_dir, None))
            found = structure(deck)
        periods = [s.period for s in found.steps]
        done = completed_steps(ctx.run_dir, job, periods)
        rout = latest_restart(ctx.run_dir, job)
        if rout is None or done == 0 or found.problem is not None:
            raise UserError("calculix: no completed step with a restart record (.rout) to restart from; "
                            "rerun instead")
        jobname = f"{job}_r{ctx.attempt}"
        (ctx.run_dir / f"{jobname}.rin").write_bytes(rout.read_bytes())
        header = (f"** restart written for {ctx.job_id}/{ctx.run_id}, attempt {ctx.attempt}: "
                  f"steps {done + 1}.. after {done} completed step(s), from {rout.name}\n")
        try:
            _write(ctx.run_dir / f"{jobname}.inp", restart_deck(deck, found, done, header))
        except DeckError as exc:
            raise UserError(f"calculix: {exc}; rerun instead") from None
        return jobname, periods

    def desktop_apps(self, options: CalculiXOptions, ctx: DesktopContext) -> list[DesktopApp]:
        """CalculiX GraphiX on the job's results (<job>.frd, once ccx wrote it), then the defaults."""
        # cgx(1): -v (the default) reads a .frd result file, and the optional solver input beside it gives
        # the sets and loads of the calculation. It reads the file once: reopen it from the menu for newer steps.
        cgx = DesktopApp("CalculiX GraphiX", ("cgx", "-v", f"{options.jobname}.frd", f"{options.jobname}.inp"),
                         cwd=ctx.run_id, wait_for=f"{options.jobname}.frd")
        return [cgx, *terminal_and_files(ctx.run_id)]

    def series_files(self) -> tuple[str, ...]:
        return ("*.sta", "*.cvg")  # increments and equilibrium iterations, one file each per attempt

    def parse_series(self, path: str, text: str, state: dict[str, Any]) -> dict[str, list[list[float]]]:
        return parse_ccx_sta(text, state) if path.endswith(".sta") else parse_ccx_cvg(text, state)

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
        # run.sh lets the current step end (its restart record is written), then stops ccx. A deck run
        # unchanged writes no restart record: stopping it at a step boundary would only lose time.
        try:
            files.read_text(NO_RESTART)
            return False
        except FileNotFoundError:
            return touch(files, STOP_FILE)

    def latest_checkpoint(self, run_dir: Path) -> str | None:
        if no_restart_reason(run_dir) is not None:
            return None
        inputs = sorted(p for p in run_dir.glob("*.inp") if not re.search(r"_r\d+\.inp$", p.name))
        for inp in inputs:
            rout = latest_restart(run_dir, inp.stem)
            if rout is not None:
                try:
                    found = structure(_read(_text(inp), _opener(run_dir, None)))
                except UserError:
                    continue
                done = completed_steps(run_dir, inp.stem, [s.period for s in found.steps])
                return f"after step {done} ({rout.name})"
        return None


def unavailable(problem: str) -> str:
    """The run's info line for a deck run unchanged."""
    return (f"pause/restart unavailable: the deck runs unchanged ({problem}); a pause stops ccx without a "
            "restart record, rerun to start over")


def no_restart_reason(run_dir: Path) -> str | None:
    """Why this run's deck was left unchanged (None: it writes a restart record at every step's end)."""
    note = run_dir / NO_RESTART
    return note.read_text().strip() if note.is_file() else None


def _read(text: str, opener) -> DeckFile:
    try:
        return read_deck(text, opener)
    except DeckError as exc:
        raise UserError(f"calculix: {exc}") from None


def _text(path: Path) -> str:
    return path.read_bytes().decode("latin-1")


def _write(path: Path, text: str) -> None:
    path.write_bytes(text.encode("latin-1"))


def _opener(run_dir: Path, deck_dir: Path | None):
    """Opens an *INCLUDE as ccx will in the run directory: a file already there (include_files, an edited
    input) wins; else the file next to the deck is copied in at the same relative path. A name leaving the
    deck's folder is not read by the engine (None: the deck then runs unchanged)."""
    def open_include(name: str) -> str | None:
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            return None
        target = run_dir / rel
        if not target.is_file() and deck_dir is not None:
            source = (deck_dir / rel).resolve()
            if source.is_file() and source.is_relative_to(deck_dir.resolve()):
                target.parent.mkdir(parents=True, exist_ok=True)
                copy_if_absent(str(source), str(target))
        if not target.is_file():
            raise DeckError(f"*INCLUDE, INPUT={name}: no such file next to the deck or in include_files "
                            "(ccx would stop: cannot open file)")
        return _text(target)
    return open_include


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
