"""Ansys Mechanical APDL plugin: `ansys<ver> -b -dis -np -machines`, graceful stop by <job>.abt, ANTYPE,,RESTART."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

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
    Secret,
    SolverOptions,
    SolverPlugin,
    terminal_and_files,
)
from .vendor import (
    JOBNAME_PATTERN,
    ExtraArg,
    InputFile,
    ansys_licence_env,
    attempt_name,
    copy_input,
    hosts,
    numbered,
    safe_name,
    touch,
)

# Releases whose launcher is called ansys<NNN> (2022 R2 .. 2025 R2); the same binary answers to `mapdl`.
VERSIONS = ("222", "231", "232", "241", "242", "251", "252")
_SUBSTEP = re.compile(r"\*\*\* LOAD STEP\s+(\d+)\s+SUBSTEP\s+(\d+)\s+COMPLETED\.\s+CUM ITER =\s+(\d+)")
_TIME = re.compile(r"\*\*\* TIME =\s+([-+0-9.eE]+)")
# e.g. "FORCE CONVERGENCE VALUE  =   3478.      CRITERION=   17.39" (also MOMENT, DISP, HEAT FLOW)
_CONVERGENCE = re.compile(r"(FORCE|MOMENT|DISP|HEAT FLOW) CONVERGENCE VALUE\s*=\s*([-+0-9.eE]+)\s+CRITERION=\s*"
                          r"([-+0-9.eE]+)")
_LABELS = {"FORCE": "F", "MOMENT": "M", "DISP": "U", "HEAT FLOW": "HEAT"}
# .mntr: LOAD STEP, SUB-STEP, NO.ATTMP, NO.ITER, TOTL.ITER, INCREMENT TIME/LFACT, TOTAL TIME/LFACT, VARIAB...
_MNTR_ROW = re.compile(r"^[ \t]*(\d+)[ \t]+(\d+)[ \t]+(\d+)[ \t]+(\d+)[ \t]+(\d+)"
                       r"[ \t]+([-+0-9.eE]+)[ \t]+([-+0-9.eE]+)", re.M)
_ABORTED = re.compile(r"[^\n]*abort file[^\n]*", re.I)
_ERROR = re.compile(r"\*\*\* ERROR \*\*\*[^\n]*\n\s*([^\n]+)")
_NOT_CONVERGED = re.compile(r"[^\n]*SOLUTION (?:IS )?NOT CONVERGED[^\n]*|[^\n]*solution was not converged[^\n]*", re.I)
_TIME_CMD = re.compile(r"^\s*TIME\s*,\s*([-+0-9.eE]+)", re.M | re.I)


class MechanicalOptions(SolverOptions):
    """`solver:` block for Ansys Mechanical APDL (batch, distributed memory)."""

    name: Literal["mechanical"]
    version: Literal[VERSIONS] = Field("241", description="the launcher is ansys<version>, e.g. ansys241")
    input: InputFile(".dat", ".inp", ".mac", ".cdb", ".txt")
    jobname: str = Field("file", pattern=JOBNAME_PATTERN, description="-j: names every file of the run")
    product: str | None = Field(None, pattern=r"^[A-Za-z0-9_]{1,32}$", description="licence feature (-p), e.g. ansys")
    mpi: Literal["intelmpi", "openmpi"] = "intelmpi"
    threads_per_process: int = Field(1, ge=1, le=256, description="-nt (hybrid DMP+SMP) when above 1")
    memory_mb: int | None = Field(None, ge=64, le=4_000_000, description="-m workspace")
    restart_commands: str = Field(
        "", max_length=20000,
        description="APDL lines placed between ANTYPE,,RESTART and SOLVE on a restart (e.g. more load steps)")
    extra_args: list[ExtraArg] = Field(default_factory=list)
    license_file: Secret | None = Field(None, description="ANSYSLMD_LICENSE_FILE, e.g. 1055@licserver")
    li_servers: Secret | None = Field(None, description="ANSYSLI_SERVERS, e.g. 2325@licserver")

    @field_validator("restart_commands")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class Mechanical(SolverPlugin):
    name = "mechanical"
    Options = MechanicalOptions
    summary = "Ansys Mechanical APDL: ansys<ver> -b -dis -np -machines; <job>.abt pauses, ANTYPE,,RESTART restarts"
    cleanup_patterns = ("*.abt", "*.lock")

    def desktop_apps(self, options: MechanicalOptions, ctx: DesktopContext) -> list[DesktopApp]:
        """The MAPDL GUI on the run's results, read-only by construction: it works in its own folder under the
        desktop's apps (`-dir`, its own job name `-j e2e_view`, so no file of the batch job's name is touched),
        and its start file copies <job>.rst into that folder and reads the copy in /POST1 (FILE, SET,LAST).
        The toolbar's LATEST button copies and reads again as the run writes more. Started once the batch run
        wrote its .rst; then a terminal and a file manager on the run's copy."""
        viewer = mapdl_viewer(options, ctx)
        return [*([viewer] if viewer else []), *terminal_and_files(ctx.run_id)]

    def prepare(self, options: MechanicalOptions, ctx: LaunchContext) -> Prepared:
        job = options.jobname
        if ctx.mode is RunMode.RESTART:
            if not (ctx.run_dir / f"{job}.rdb").exists() or not restart_files(ctx.run_dir, job):
                raise UserError(f"mechanical: no {job}.rdb and {job}.Rnnn restart files to restart from; rerun instead")
            input_name = attempt_name("restart", ".inp", ctx.attempt)
            (ctx.run_dir / input_name).write_text(restart_input(options, ctx))
        else:
            input_name = copy_input(options.input, ctx.run_dir)
        # A restart continues the original deck's load step, so its TIME is the end either way.
        original = ctx.run_dir / safe_name(options.input.name)
        times = _TIME_CMD.findall(original.read_text(errors="replace")) if original.is_file() else []
        total = float(times[-1]) if times else None
        # -machines host:processes:host:processes, per host (DMP runs its own MPI over ssh); with -nt each
        # process also runs threads, so a host's cores are split between them.
        spread = [(h.address, max(1, h.slots // options.threads_per_process)) for h in hosts(ctx)]
        machines = ":".join(f"{address}:{procs}" for address, procs in spread)
        log_file = attempt_name(job, ".out", ctx.attempt)
        return Prepared(
            template="mechanical/run.sh.j2",
            context={"executable": f"ansys{options.version}", "nprocs": sum(n for _, n in spread), "machines": machines,
                     "mpi": options.mpi, "jobname": job, "input": input_name, "log_file": log_file,
                     "stdout": attempt_name(job, ".stdout", ctx.attempt), "product": options.product,
                     "threads": options.threads_per_process,
                     "memory": options.memory_mb, "extra_args": list(options.extra_args)},
            log_file=log_file,
            progress_total=total,
            env=ansys_licence_env(ctx, options),
        )

    def parse_progress(self, text: str, last: Progress | None) -> Progress | None:
        progress = (last or Progress()).model_copy(deep=True)
        found = False
        for label, value, criterion in _CONVERGENCE.findall(text):
            key = _LABELS[label]
            if key == "F":  # FORCE opens each equilibrium iteration's block of convergence values
                progress.residuals = {}
            progress.residuals.update({key: float(value), f"{key}_criterion": float(criterion)})
            found = True
        for value in _TIME.findall(text):
            progress.step, found = float(value), True
        if (m := list(_SUBSTEP.finditer(text))):
            step, sub, cum = m[-1].groups()
            progress.message, found = f"load step {step} substep {sub} (cumulative iterations {cum})", True
        if not found:  # a .mntr table: TOTAL TIME/LFACT is the 8th column
            for row in _MNTR_ROW.findall(text):
                progress.step, found = float(row[6]), True
        for rx in (_ABORTED, _NOT_CONVERGED):
            if (m := rx.search(text)):
                progress.message, found = m.group(0).strip(), True
        if (m := _ERROR.search(text)):
            progress.message, found = f"*** ERROR *** {m.group(1).strip()}", True
        return progress if found else None

    def judge_exit(self, exit_code: int, log_tail: str) -> Outcome:
        if (m := _ERROR.search(log_tail)):
            return Outcome(False, f"*** ERROR *** {m.group(1).strip()} (exit code {exit_code})")
        if (m := _NOT_CONVERGED.search(log_tail)):
            return Outcome(False, m.group(0).strip())
        if exit_code != 0:
            return Outcome(False, f"exit code {exit_code}")
        return Outcome(True, "MAPDL run completed")

    def request_stop(self, files: RunFiles) -> bool:
        # Read at the next substep of a nonlinear/transient solve, which then writes an .Rnnn and ends.
        job = _jobname_from(files)
        return touch(files, f"{job}.abt", "nonlinear\n")

    def latest_checkpoint(self, run_dir: Path) -> str | None:
        for rdb in sorted(run_dir.glob("*.rdb")):
            found = restart_files(run_dir, rdb.stem)
            if found:
                return f"{found[-1][1].name} (load step restart, with {rdb.name})"
        return None


VIEWER_DIR = "mapdl-view"   # under the desktop's apps folder: the viewer's working directory
VIEWER_JOB = "e2e_view"     # the viewer's own job name: its .log/.db/.lock never meet the batch job's
_APDL_PATH = re.compile(r"^[A-Za-z0-9_./+-]{1,200}$")  # what an APDL field carries safely (no comma, quote)


def mapdl_viewer(options: MechanicalOptions, ctx: DesktopContext) -> DesktopApp | None:
    """`ansys<ver> -g -j e2e_view -dir <apps>/mapdl-view -s read`: the GUI (-g) reads start.ans in its working
    directory (-s read), which defines the LATEST toolbar button (*ABBR) and presses it once. None when the
    run's copy is unknown or its path cannot be written into an APDL field (a comma or quote would split it)."""
    job = options.jobname
    if ctx.run_copy is None or not _APDL_PATH.match(str(ctx.run_copy / job)):
        return None
    latest = "\n".join([
        "! e2e: read the run's latest results from a copy; the run's own file is only ever read by /COPY",
        f"/COPY,'{ctx.run_copy / job}','rst',,'snapshot','rst'",
        "/POST1",
        "FILE,'snapshot','rst'",
        "SET,LAST",
        "PLNSOL,U,SUM",
    ]) + "\n"
    start = ("! e2e: the job's results, read-only; LATEST reads the newest set the batch run has written\n"
             "*ABBR,LATEST,E2E_LATEST\nE2E_LATEST\n")
    return DesktopApp(
        "MAPDL results (read-only)",
        (f"ansys{options.version}", "-g", "-j", VIEWER_JOB, "-dir", str(ctx.apps_dir / VIEWER_DIR), "-s", "read"),
        cwd=ctx.run_id, wait_for=f"{job}.rst",
        files={f"{VIEWER_DIR}/start.ans": start, f"{VIEWER_DIR}/e2e_latest.mac": latest})


def restart_files(run_dir: Path, job: str) -> list[tuple[int, Path]]:
    return numbered(run_dir.glob(f"{job}.[rR][0-9][0-9][0-9]"), r"\.[rR](\d{3})$")


def restart_input(options: MechanicalOptions, ctx: LaunchContext) -> str:
    """The restart deck: resume the interrupted load step from the latest .Rnnn, then the user's additions."""
    lines = [f"! MAPDL restart written for {ctx.job_id}/{ctx.run_id}, attempt {ctx.attempt}",
             "/SOLU", "ANTYPE,,RESTART"]
    if options.restart_commands.strip():
        lines.append(options.restart_commands.rstrip("\n"))
    lines += ["SOLVE", "FINISH", "/EXIT,NOSAVE"]
    return "\n".join(lines) + "\n"


def _jobname_from(files: RunFiles) -> str:
    """The job name, from the run script the engine rendered (it is the `-j` argument)."""
    m = re.search(r"\s-j\s+'?([A-Za-z][A-Za-z0-9_]*)", files.read_text("run.sh"))
    return m.group(1) if m else "file"
