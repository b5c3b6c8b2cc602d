"""Generic command plugin: runs one argv on the allocation (scripts, in-house codes, smoke tests)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator

from orchestrator.model.spec import resolve_input_path

from .base import LaunchContext, Prepared, Progress, RunMode, SolverOptions, SolverPlugin, copy_if_absent

_FRACTION = re.compile(r"^progress[:=\s]+([0-9.]+)\s*/\s*([0-9.]+)\s*$", re.M | re.I)
_PERCENT = re.compile(r"^progress[:=\s]+([0-9.]+)\s*%\s*$", re.M | re.I)
_RESIDUAL = re.compile(r"^residual[:=\s]+([A-Za-z][\w.()/-]{0,63})\s+([-+]?(?:[0-9.]+(?:[eE][-+]?\d+)?|nan|inf))\s*$",
                       re.M | re.I)


def _existing(path: Path, info) -> Path:
    if (info.context or {}).get("check_paths", True) and not path.exists():
        raise ValueError(f"{str(path)!r} does not exist")
    return path


class CommandOptions(SolverOptions):
    """`solver:` block for a plain command. Print `progress: 3/10` or `progress: 30%` lines to report progress,
    and `residual: NAME VALUE` lines (e.g. `residual: p 1.2e-3`) for the monitor rules to judge."""

    name: Literal["command"]
    command: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(min_length=1)
    inputs: list[Annotated[Path, BeforeValidator(resolve_input_path), AfterValidator(_existing)]] = Field(
        default_factory=list, description="files or folders copied into the run directory")
    env: dict[str, Annotated[str, Field(max_length=4096)]] = Field(default_factory=dict)

    @field_validator("command", "env")
    @classmethod
    def _no_nul(cls, value):
        items = value if isinstance(value, list) else list(value) + list(value.values())
        if any("\x00" in item for item in items):
            raise ValueError("must not contain NUL characters")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", k)]
        if bad:
            raise ValueError(f"not environment variable names: {', '.join(map(repr, bad))}")
        return value


class Command(SolverPlugin):
    name = "command"
    Options = CommandOptions
    summary = "any command; $E2E_HOSTFILE and $E2E_NPROCS describe the allocation"
    runs_on_fewer_nodes = True  # the command reads the allocation from $E2E_HOSTFILE on every attempt

    def prepare(self, options: CommandOptions, ctx: LaunchContext) -> Prepared:
        restart = ctx.mode is RunMode.RESTART
        for src in [] if restart else options.inputs:  # a restart keeps the directory as it was left
            dest = ctx.run_dir / src.name
            if src.is_dir():
                shutil.copytree(src, dest, dirs_exist_ok=True, copy_function=copy_if_absent)
            elif not dest.exists():  # an edited input (e2e edit --file) is already there and wins
                shutil.copy2(src, dest)
        return Prepared(template="command/run.sh.j2", context={"command": options.command, "append_log": restart},
                        log_file="output.log", env=dict(options.env))

    def latest_checkpoint(self, run_dir: Path) -> str | None:
        # The command itself decides what to continue from: it sees E2E_RUN_MODE=restart and E2E_ATTEMPT.
        return "the run directory as the command left it" if run_dir.is_dir() else None

    def parse_progress(self, text: str, last: Progress | None) -> Progress | None:
        fractions = _FRACTION.findall(text)
        percents = _PERCENT.findall(text)
        residuals = _RESIDUAL.findall(text)
        if not fractions and not percents and not residuals:
            return None
        progress = (last or Progress()).model_copy(deep=True)
        for name, value in residuals:
            progress.residuals[name] = float(value)
        if fractions:
            step, total = fractions[-1]
            progress.step, progress.total = float(step), float(total)
        elif percents:
            progress.step, progress.total = float(percents[-1]), 100.0
        return progress
