"""Shared plumbing of the solver emulators: strict flag parsing, host files, pacing, control files."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

# Seconds per emulated iteration; tests keep the default, a demo may slow it down.
DELAY = float(os.environ.get("E2E_EMULATOR_DELAY", "0.05"))


class UsageError(Exception):
    """A command line the real launcher would refuse."""


def fail_usage(prog: str, message: str) -> None:
    print(f"{prog}: {message}", file=sys.stderr)
    sys.exit(2)


def out(line: str = "") -> None:
    print(line, flush=True)


def pace() -> None:
    time.sleep(DELAY)


def read_lines(path: str | Path) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"cannot open host file {str(path)!r}")
    return [line.strip() for line in p.read_text().splitlines() if line.strip() and not line.startswith("#")]


def take(argv: list[str], i: int, flag: str) -> str:
    if i + 1 >= len(argv):
        raise UsageError(f"{flag} needs a value")
    return argv[i + 1]


def consume(path: Path) -> bool:
    """True once when a trigger file exists; removes it, as the solvers do after acting on it."""
    if path.exists():
        try:
            path.unlink()
        except OSError:
            pass
        return True
    return False


def hostname() -> str:
    return socket.gethostname().split(".")[0]


def run_tag_note() -> str:
    """Proves the tag reached the solver process (tests read it from the log)."""
    return f"run tag: {os.environ.get('E2E_RUN_TAG', '(none)')}"
