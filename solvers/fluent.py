"""Ansys Fluent plugin: a generated (or the user's) journal run by `fluent -g -t -cnf -i`; checkpoint/exit files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

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
from .series import parse_fluent_report
from .vendor import ExtraArg, InputFile, ansys_licence_env, attempt_name, copy_input, hosts, numbered, touch

CHECK_FILE = "check-fluent"   # touch: write case/data and carry on
EXIT_FILE = "exit-fluent"     # touch: write case/data and exit (the graceful pause)
AUTOSAVE_DIR = "autosave"
AUTOSAVE_ROOT = f"{AUTOSAVE_DIR}/run"
# -sifile: Fluent's gRPC server writes its address (line 1, ip:port) and password (line 2) here, in the run dir
SERVER_INFO = "fluent-server-info.txt"
MONITOR_APP = "fluent_monitor.py"
MONITOR_SOURCE = Path(__file__).resolve().parent.parent / "templates" / "fluent" / MONITOR_APP
MONITOR_NAME = "Fluent monitor (attached to the run)"
_PROGRAM = re.compile(r"(/[A-Za-z0-9_.+-]+)+|[A-Za-z0-9_.+-]+")
_CASE_SUFFIXES = (".cas.h5", ".cas.gz", ".cas")
_DATA_SUFFIXES = (".dat.h5", ".dat.gz", ".dat")
_HEADER = re.compile(r"^[ \t]*iter[ \t]+(.*?)[ \t]+time/iter[ \t]*$", re.M)
_ROW = re.compile(r"^[ \t]*(\d+)[ \t]+((?:[-+0-9.eE]+[ \t]+)+)(\d+:\d\d:\d\d)[ \t]+(\d+)[ \t]*$", re.M)
_TIME_STEP = re.compile(r"Flow time = ([-+0-9.eE]+)\s*s?, time step = (\d+)")
_CONVERGED = re.compile(r"^!\s*(\d+) solution is converged", re.M)
_FAILURES = (re.compile(r"Divergence detected in AMG solver[^\n]*"),
             re.compile(r"Error at (?:host|Node \d+): floating point exception[^\n]*"),
             re.compile(r"BAD TERMINATION[^\n]*"),
             re.compile(r"^Error: [^\n]*", re.M))


class FluentOptions(SolverOptions):
    """`solver:` block for Ansys Fluent (batch, distributed)."""

    name: Literal["fluent"]
    dimension: Literal["2d", "2ddp", "3d", "3ddp"] = "3ddp"
    case: InputFile(*_CASE_SUFFIXES)
    data: InputFile(*_DATA_SUFFIXES) | None = Field(None, description="read case+data; no initialisation")
    journal: InputFile(".jou", ".journal") | None = Field(
        None, description="your own journal instead of the generated one (checkpoint names are still set first)")
    initialize: Literal["hybrid", "standard", "none"] = Field(
        "hybrid", description="how a fresh run starts when no data is read (data and restarts skip it)")
    iterations: int = Field(100, ge=1, le=10_000_000, description="steady: /solve/iterate N")
    time_steps: int | None = Field(None, ge=1, le=10_000_000, description="transient: dual-time-iterate steps")
    max_iterations_per_step: int = Field(20, ge=1, le=10_000)
    autosave_every: int = Field(50, ge=1, le=10_000_000, description="data autosave frequency")
    autosave_keep: int = Field(3, ge=1, le=1000)
    mpi: Literal["intel", "openmpi", "ibmmpi"] = "intel"
    ssh: bool = True
    extra_args: list[ExtraArg] = Field(default_factory=list, description="more fluent launcher options")
    license_file: Secret | None = Field(None, description="ANSYSLMD_LICENSE_FILE, e.g. 1055@licserver")
    li_servers: Secret | None = Field(None, description="ANSYSLI_SERVERS, e.g. 2325@licserver")
    attach: bool = Field(False, description=(
        f"start Fluent's gRPC server (-sifile={SERVER_INFO} in the run directory) so the desktop's Fluent "
        "monitor attaches to the running batch solver through PyFluent and shows its live iteration and residuals"))
    monitor_python: str = Field(
        "python3", max_length=255,
        description=("the Python the desktop's Fluent monitor runs with, on the head node: one with PyFluent "
                     "(pip install ansys-fluent-core) and tkinter; a command on PATH or an absolute path "
                     "(e.g. a venv's bin/python)"))

    @model_validator(mode="after")
    def _journal_or_generated(self) -> FluentOptions:
        if self.journal is not None and self.time_steps is not None:
            raise ValueError("journal and time_steps exclude each other: your journal decides what to iterate")
        return self

    @field_validator("monitor_python")
    @classmethod
    def _one_program(cls, value: str) -> str:
        if not _PROGRAM.fullmatch(value) or ".." in value.split("/"):
            raise ValueError("must be a command name or an absolute path (letters, digits, _ . + -), without '..'")
        return value


class Fluent(SolverPlugin):
    name = "fluent"
    Options = FluentOptions
    summary = "Ansys Fluent: fluent <dim> -g -t<N> -cnf=<hosts> -i <journal>; exit-fluent pauses, autosave restarts"
    # the server-info file too: a previous attempt's address and password are dead once it ended
    cleanup_patterns = (CHECK_FILE, EXIT_FILE, "#restart.inp", "*.lock", SERVER_INFO)

    def desktop_apps(self, options: FluentOptions, ctx: DesktopContext) -> list[DesktopApp]:
        """With `attach`, first the Fluent monitor: a small Tk program shipped with the plugin that connects to
        the batch run's gRPC server with PyFluent's connect_to_fluent (server-info file, cleanup_on_exit=False,
        so closing it never stops the run) and shows the live iteration and residuals. Fluent's own GUI has no
        documented way to attach to a -g batch run, so the attach is PyFluent's. The desktop runs on the job's
        first node, where Fluent's host process and its server run; the monitor reads the server-info file
        from the run's copy in the work folder (the sync keeps its 0600 mode). Then a terminal and a file
        manager on that copy."""
        apps = []
        if options.attach:
            apps.append(DesktopApp(MONITOR_NAME,
                                   (options.monitor_python, str(ctx.apps_dir / MONITOR_APP), SERVER_INFO),
                                   cwd=ctx.run_id, files={MONITOR_APP: MONITOR_SOURCE.read_text()}))
        return [*apps, *terminal_and_files(ctx.run_id)]

    def prepare(self, options: FluentOptions, ctx: LaunchContext) -> Prepared:
        (ctx.run_dir / AUTOSAVE_DIR).mkdir(parents=True, exist_ok=True)
        case = copy_input(options.case, ctx.run_dir, "case" + _suffix(options.case.name, _CASE_SUFFIXES))
        data = None
        if options.data is not None:
            data = copy_input(options.data, ctx.run_dir, "case" + _suffix(options.data.name, _DATA_SUFFIXES))
        resume = latest_data(ctx.run_dir) if ctx.mode is RunMode.RESTART else None
        if ctx.mode is RunMode.RESTART and resume is None:
            raise UserError("fluent: no autosave or checkpoint data in the run directory to restart from; "
                            "rerun instead")
        journal = attempt_name("run", ".jou", ctx.attempt)
        (ctx.run_dir / journal).write_text(self.journal(options, ctx, case, data, resume))
        hostfile = "fluent.hosts"
        # One line per process: the PBS_NODEFILE layout, which Fluent's -cnf reads as its host file.
        (ctx.run_dir / hostfile).write_text("".join(f"{h.address}\n" * h.slots for h in hosts(ctx)))
        log_file = attempt_name("fluent", ".trn", ctx.attempt)
        transient = options.time_steps is not None
        return Prepared(
            template="fluent/run.sh.j2",
            context={"dimension": options.dimension, "nprocs": ctx.nprocs, "hostfile": hostfile,
                     "mpi": options.mpi, "ssh": options.ssh, "extra_args": list(options.extra_args),
                     "journal": journal, "log_file": log_file,
                     "server_info": SERVER_INFO if options.attach else ""},
            log_file=log_file,
            progress_total=None if options.journal else float(options.time_steps if transient else options.iterations),
            env=ansys_licence_env(ctx, options),
        )

    def journal(self, options: FluentOptions, ctx: LaunchContext, case: str, data: str | None,
                resume: tuple[int, Path] | None) -> str:
        lines = [f"; Fluent journal generated for {ctx.job_id}/{ctx.run_id}, attempt {ctx.attempt} ({ctx.mode.value})",
                 "; the control files live in the run directory, so pause (exit-fluent) and checkpoint work there",
                 f'(set! checkpoint/check-filename "./{CHECK_FILE}")',
                 f'(set! checkpoint/exit-filename "./{EXIT_FILE}")',
                 f"(rpsetvar 'checkpoint/filename \"./{AUTOSAVE_ROOT}\")",
                 "/file/set-batch-options no yes no"]
        if resume is not None:
            # the case is unchanged by the run; the newest data carries the solution and iteration counter
            lines.append(f'/file/read-case "{case}"')
            lines.append(f'/file/read-data "{resume[1].relative_to(ctx.run_dir).as_posix()}"')
        elif data is not None:
            lines.append(f'/file/read-case-data "{case}"')
        else:
            lines.append(f'/file/read-case "{case}"')
        lines += [f"/file/auto-save/data-frequency {options.autosave_every}",
                  "/file/auto-save/case-frequency if-case-is-modified",
                  f'/file/auto-save/root-name "./{AUTOSAVE_ROOT}"',
                  "/file/auto-save/retain-most-recent-files yes",
                  f"/file/auto-save/max-files {options.autosave_keep}"]
        if options.journal is not None:
            lines.append("; --- the user's journal follows ---")
            lines.append(options.journal.read_text().rstrip("\n"))
            return "\n".join(lines) + "\n"
        if resume is None and data is None and options.initialize != "none":
            lines.append("/solve/initialize/hyb-initialization" if options.initialize == "hybrid"
                         else "/solve/initialize/initialize-flow")
        done = resume[0] if resume else 0
        if options.time_steps is not None:
            lines.append(f"/solve/dual-time-iterate {max(options.time_steps - done, 0)} "
                         f"{options.max_iterations_per_step}")
        else:
            lines.append(f"/solve/iterate {max(options.iterations - done, 0)}")
        lines += ['/file/write-case-data "./final" ok', "exit yes"]
        return "\n".join(lines) + "\n"

    def series_files(self) -> tuple[str, ...]:
        return ("*.out",)  # report files (report definitions written per iteration): <name>.out

    def parse_series(self, path: str, text: str, state: dict[str, Any]) -> dict[str, list[list[float]]]:
        return parse_fluent_report(path, text, state)

    def parse_progress(self, text: str, last: Progress | None) -> Progress | None:
        progress = (last or Progress()).model_copy(deep=True)
        found = False
        columns = list(progress.residuals)  # a header seen in an earlier chunk: its names, in order
        for match in re.finditer(rf"{_HEADER.pattern}|{_ROW.pattern}", text, re.M):
            if match.group(1) is not None:  # a header: the columns of the rows that follow
                columns = match.group(1).split()
                continue
            values = match.group(3).split()
            progress.step = float(match.group(2))
            if columns and len(columns) == len(values):
                progress.residuals = {c: float(v) for c, v in zip(columns, values, strict=False)}
            found = True
        for time_value, step in _TIME_STEP.findall(text):
            progress.step, progress.solver_time, found = float(step), float(time_value), True
        if (m := _CONVERGED.search(text)):
            progress.converged, found = True, True
            progress.message = f"solution is converged at iteration {m.group(1)}"
        for failure in _FAILURES:
            if (m := failure.search(text)):
                progress.message, found = m.group(0).strip(), True
        return progress if found else None

    def judge_exit(self, exit_code: int, log_tail: str) -> Outcome:
        for failure in _FAILURES:
            if (m := failure.search(log_tail)):
                return Outcome(False, f"{m.group(0).strip()} (exit code {exit_code})")
        if exit_code != 0:
            return Outcome(False, f"exit code {exit_code}")
        return Outcome(True, "journal finished with exit yes")

    def request_stop(self, files: RunFiles) -> bool:
        # Fluent polls for the exit file each iteration: it writes case/data, #restart.inp, then exits.
        return touch(files, EXIT_FILE)

    def latest_checkpoint(self, run_dir: Path) -> str | None:
        found = latest_data(run_dir)
        return f"iteration {found[0]}: {found[1].relative_to(run_dir)}" if found else None


def latest_data(run_dir: Path) -> tuple[int, Path] | None:
    """The autosave/checkpoint data file with the highest iteration, and that iteration."""
    candidates = numbered((run_dir / AUTOSAVE_DIR).glob("*.dat*"), r"-(\d+)\.dat(?:\.h5|\.gz)?$")
    return candidates[-1] if candidates else None


def _suffix(name: str, suffixes: tuple[str, ...]) -> str:
    return next(s for s in suffixes if name.lower().endswith(s))
