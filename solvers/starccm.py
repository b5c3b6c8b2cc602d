"""Simcenter STAR-CCM+ plugin: `starccm+ -batch -np -machinefile -rsh ssh`, ABORT/CHECKPOINT files, .sim restarts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

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
from .series import parse_star_csv
from .vendor import (
    ExtraArg,
    InputFile,
    attempt_name,
    copy_input,
    failed_on,
    hosts,
    licence_env,
    note_error,
    numbered,
    safe_name,
    touch,
)

STOP_FILE = "ABORT"            # the automatic "Stop File" criterion: stop at the end of the step, save the .sim
CHECKPOINT_FILE = "CHECKPOINT"  # the Auto Save trigger file: save and carry on
MACRO = "e2e_run.java"
_HEADER = re.compile(r"^[ \t]*Iteration((?:[ \t]+\S+)+)[ \t]*$", re.M)
_ROW = re.compile(r"^[ \t]*(\d+)((?:[ \t]+[-+]?\d\.\d+[eE][-+]\d+)+)[ \t]*$", re.M)
_STOPPED = re.compile(r"^\s*Stopping criterion (.+?) satisfied\.?", re.M)
_SAVED = re.compile(r"Simulation saved to (\S+)")
_SERVER = re.compile(r"Server::start -host (\S+)")
_ERROR = re.compile(r"^\s*(?:error|Error|ERROR):[^\n]*|[^\n]*Floating point exception[^\n]*", re.M)
_EXITED = re.compile(r"Server process exited with code (\d+)")


class StarCCMOptions(SolverOptions):
    """`solver:` block for Simcenter STAR-CCM+ (batch)."""

    name: Literal["starccm"]
    sim: InputFile(".sim")
    macro: InputFile(".java") | None = Field(None, description="your own macro instead of `-batch run`")
    max_steps: int | None = Field(None, ge=1, le=100_000_000,
                                  description="set the Maximum Steps criterion (through a generated macro), then run")
    mpi: Literal["openmpi", "intel", "platform"] = "openmpi"
    server_port: int | None = Field(None, ge=1024, le=65535,
                                    description="fix the batch server's port; publish host:port for a client")
    power: bool = Field(False, description="Power-on-Demand licensing (-power); the podkey goes in LM_PROJECT")
    podkey: Secret | None = None
    license_path: Secret | None = Field(None, description="CDLMD_LICENSE_FILE, e.g. 1999@flex.cd-adapco.com")
    extra_args: list[ExtraArg] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_way_to_run(self) -> StarCCMOptions:
        if self.macro is not None and self.max_steps is not None:
            raise ValueError("macro and max_steps exclude each other: set the steps in your macro")
        return self


class StarCCM(SolverPlugin):
    name = "starccm"
    Options = StarCCMOptions
    summary = "Simcenter STAR-CCM+: starccm+ -batch run -np -machinefile -rsh ssh; ABORT pauses, saved .sim restarts"
    cleanup_patterns = (STOP_FILE, CHECKPOINT_FILE, CHECKPOINT_FILE + "~")

    def desktop_apps(self, options: StarCCMOptions, ctx: DesktopContext) -> list[DesktopApp]:
        """With a fixed server port, the STAR-CCM+ client attached to the batch server (`starccm+ -host H -port
        P`, what File > Connect to Server does): the desktop runs on the job's first node, where the server
        listens, so the host is the node itself. Then a terminal and a file manager on the run's copy."""
        apps = []
        if options.server_port is not None:
            apps.append(DesktopApp("STAR-CCM+ (attached to the run)",
                                   ("starccm+", "-host", "localhost", "-port", str(options.server_port)),
                                   cwd=ctx.run_id))
        return [*apps, *terminal_and_files(ctx.run_id)]

    def prepare(self, options: StarCCMOptions, ctx: LaunchContext) -> Prepared:
        sim = safe_name(options.sim.name)
        if ctx.mode is RunMode.RESTART:
            saved = latest_sim(ctx.run_dir)
            if saved is None:
                raise UserError("starccm: no saved .sim in the run directory to restart from; rerun instead")
            sim = saved.name  # the solution and iteration counter live in the saved file
        else:
            copy_input(options.sim, ctx.run_dir, sim)
        batch = "run"
        if options.macro is not None:
            batch = copy_input(options.macro, ctx.run_dir)
        elif options.max_steps is not None:
            (ctx.run_dir / MACRO).write_text(run_macro(options.max_steps))
            batch = MACRO
        machinefile = "machinefile"
        (ctx.run_dir / machinefile).write_text("".join(f"{h.address}\n" * h.slots for h in hosts(ctx)))
        env = licence_env(ctx, ("CDLMD_LICENSE_FILE", "LM_PROJECT"), CDLMD_LICENSE_FILE=options.license_path,
                          LM_PROJECT=options.podkey)
        if options.power and "LM_PROJECT" not in env:
            raise UserError("starccm: power: true needs a podkey (solver.podkey or the cluster's LM_PROJECT)")
        info = {}
        if options.server_port is not None:
            info = {"server": f"{ctx.nodes[0].address}:{options.server_port}",
                    "connect": "STAR-CCM+ client: File > Connect to Server, host and port as above"}
        log_file = attempt_name("starccm", ".log", ctx.attempt)
        return Prepared(
            template="starccm/run.sh.j2",
            context={"batch": batch, "nprocs": ctx.nprocs, "machinefile": machinefile, "mpi": options.mpi,
                     "power": options.power, "port": options.server_port, "sim": sim,
                     "extra_args": list(options.extra_args), "log_file": log_file, "stop_file": STOP_FILE},
            log_file=log_file,
            progress_total=float(options.max_steps) if options.max_steps else None,
            env=env,
            info=info,
        )

    def series_files(self) -> tuple[str, ...]:
        return ("*.csv",)  # monitor plots exported as CSV by the macro (one per monitor)

    def parse_series(self, path: str, text: str, state: dict[str, Any]) -> dict[str, list[list[float]]]:
        return parse_star_csv(path, text, state)

    def parse_progress(self, text: str, last: Progress | None) -> Progress | None:
        progress = (last or Progress()).model_copy(deep=True)
        found = False
        columns = list(progress.residuals)
        for match in re.finditer(rf"{_HEADER.pattern}|{_ROW.pattern}", text, re.M):
            if match.group(1) is not None:
                columns = match.group(1).split()
                continue
            values = match.group(3).split()
            progress.step, found = float(match.group(2)), True
            if columns:
                progress.residuals = {c: float(v) for c, v in zip(columns, values, strict=False)}
        for criterion in _STOPPED.findall(text):
            progress.message, found = f"Stopping criterion {criterion} satisfied", True
            progress.converged = "Maximum Steps" not in criterion and "Stop File" not in criterion
        found = note_error(progress, _ERROR, text) or found
        return progress if found else None

    def judge_exit(self, exit_code: int, log_tail: str) -> Outcome:
        if failed := failed_on(_ERROR, log_tail, exit_code):
            return failed
        exited = _EXITED.findall(log_tail)
        if exit_code != 0 or (exited and exited[-1] != "0"):
            return Outcome(False, f"exit code {exit_code}" + (f", server exited with {exited[-1]}" if exited else ""))
        if not _SAVED.search(log_tail):
            return Outcome(False, "the batch run ended without saving the simulation")
        return Outcome(True, f"saved {_SAVED.findall(log_tail)[-1]}")

    def request_stop(self, files: RunFiles) -> bool:
        # The Stop File criterion: stop at the end of this iteration/time step; `-batch run` then saves the .sim.
        return touch(files, STOP_FILE)

    def latest_checkpoint(self, run_dir: Path) -> str | None:
        saved = latest_sim(run_dir)
        return saved.name if saved else None


def latest_sim(run_dir: Path) -> Path | None:
    """The newest `<name>@<iteration>.sim` a batch run saved (the iteration is in the name)."""
    found = numbered(run_dir.glob("*@*.sim"), r"@(\d+)\.sim$")
    return found[-1][1] if found else None


def run_macro(max_steps: int) -> str:
    """A batch macro: set Maximum Steps, run, save as <name>@<iteration>.sim (what `-batch run` does)."""
    return f"""// generated by e2e: set the Maximum Steps criterion, then run and save like `-batch run`
import star.common.*;

public class e2e_run extends StarMacro {{
  public void execute() {{
    Simulation simulation = getActiveSimulation();
    StepStoppingCriterion maxSteps = (StepStoppingCriterion) simulation
        .getSolverStoppingCriterionManager().getSolverStoppingCriterion("Maximum Steps");
    maxSteps.setMaximumNumberSteps({max_steps});
    simulation.getSimulationIterator().run();
    String name = simulation.getPresentationName().replaceAll("@\\\\d+$", "");
    int iteration = simulation.getSimulationIterator().getCurrentIteration();
    simulation.saveState(resolvePath(String.format("%s@%05d.sim", name, iteration)));
  }}
}}
"""
