"""The resilience report: each hardening suite records one row (suite, cases, passed, figure) for `make resilience`.

Rows go to $E2E_RESILIENCE_DIR/<suite>.json when that variable is set (bench/resilience.py sets it, runs the
suites and prints the table); without it, record() does nothing, so the suites run as plain tests too.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def record(suite: str, cases: int, passed: int, figure: str, **details: object) -> None:
    """Write this suite's row; `figure` is the one-line measurement a reader compares across runs."""
    out = os.environ.get("E2E_RESILIENCE_DIR")
    if not out:
        return
    row = {"suite": suite, "cases": cases, "passed": passed, "figure": figure, "details": details,
           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = Path(out) / f"{suite.replace('/', '_').replace(' ', '_')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=2))


def rows(directory: Path) -> list[dict]:
    """Every recorded row under a directory, in suite order."""
    return sorted((json.loads(p.read_text()) for p in Path(directory).glob("*.json")), key=lambda r: r["suite"])
