"""Helpers the vendor solver plugins share: input files, licence environment, per-host slots, checkpoint names."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from orchestrator.model.spec import resolve_input_path

from .base import LaunchContext, NodeSlots, Outcome, Progress, RunFiles, copy_if_absent

# Names the plugins give files inside the run directory: they also appear in journals and decks,
# so they stay plain words (no quotes, spaces or slashes for a solver's own parser to trip over).
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
JOBNAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,31}$"
# Extra launcher arguments: options and plain values only, never shell syntax.
ExtraArg = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.,:=/+%@-]{1,128}$")]


def _input_file(suffixes: tuple[str, ...]):
    def check(path: Path, info) -> Path:
        if not any(path.name.lower().endswith(s) for s in suffixes):
            raise ValueError(f"{path.name!r} is not a {' / '.join(suffixes)} file")
        if (info.context or {}).get("check_paths", True) and not path.is_file():
            raise ValueError(f"file {str(path)!r} does not exist")
        return path
    return check


def InputFile(*suffixes: str) -> Any:  # noqa: N802 (a type factory, used like a type)
    """A user's input file: resolved against the spec's folder, with one of `suffixes`, existing."""
    return Annotated[Path, BeforeValidator(resolve_input_path), AfterValidator(_input_file(suffixes))]


def copy_input(src: Path, run_dir: Path, name: str | None = None) -> str:
    """Copy an input into the run directory under a safe name; the name used."""
    target = name or safe_name(src.name)
    if src.is_dir():
        shutil.copytree(src, run_dir / target, dirs_exist_ok=True, copy_function=copy_if_absent)
    else:
        copy_if_absent(str(src), str(run_dir / target))
    return target


def safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".-") or "input"
    return cleaned[:64]


def hosts(ctx: LaunchContext) -> list[NodeSlots]:
    """The allocation per distinct address, slots summed, in allocation order (virtual nodes may share a host)."""
    merged: dict[str, int] = {}
    for node in ctx.nodes:
        merged[node.address] = merged.get(node.address, 0) + node.slots
    return [NodeSlots(address, address, slots) for address, slots in merged.items()]


def licence_env(ctx: LaunchContext, names: tuple[str, ...], **from_spec: Any) -> dict[str, str]:
    """Licence variables for Prepared.env: the cluster's settings, overridden by the spec's (Secret) values."""
    env = {k: ctx.site_env[k] for k in names if ctx.site_env.get(k)}
    for key, value in from_spec.items():
        if value is not None:
            secret = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
            if secret:
                env[key] = secret
    return env


ANSYS_LICENCE_VARS = ("ANSYSLMD_LICENSE_FILE", "ANSYSLI_SERVERS")


def ansys_licence_env(ctx: LaunchContext, options: Any) -> dict[str, str]:
    """The Ansys licence variables (FlexNet server, licensing interconnect) from the cluster and the spec."""
    return licence_env(ctx, ANSYS_LICENCE_VARS, ANSYSLMD_LICENSE_FILE=options.license_file,
                       ANSYSLI_SERVERS=options.li_servers)


def note_error(progress: Progress, pattern: re.Pattern[str], text: str) -> bool:
    """Show the log's error line as the progress message; whether the text had one."""
    if (m := pattern.search(text)):
        progress.message = m.group(0).strip()
        return True
    return False


def failed_on(pattern: re.Pattern[str], log_tail: str, exit_code: int) -> Outcome | None:
    """A failed Outcome naming the log's error line, when the solver wrote one (whatever its exit code)."""
    if (m := pattern.search(log_tail)):
        return Outcome(False, f"{m.group(0).strip()} (exit code {exit_code})")
    return None


def attempt_name(stem: str, suffix: str, attempt: int) -> str:
    """A per-attempt file name, for solvers that would overwrite their log on a restart."""
    return f"{stem}-{attempt}{suffix}"


def numbered(paths, pattern: str) -> list[tuple[int, Path]]:
    """(number, path) for paths whose name matches `pattern` (one group: digits), ascending."""
    rx = re.compile(pattern)
    found = []
    for path in paths:
        m = rx.search(path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def touch(files: RunFiles, rel: str, text: str = "") -> bool:
    """Create a trigger file in the run directory; True (the solver's graceful route was taken)."""
    files.write_text(rel, text)
    return True


def to_float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
