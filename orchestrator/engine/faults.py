"""Named fault points: a test or an operator drill can pause the engine at one to kill it there."""

from __future__ import annotations

import os
import time


def fault_point(name: str) -> None:
    """Sleep at `name` when E2E_FAULTS lists it (`launch.after_spawn:5,...`); a no-op otherwise."""
    spec = os.environ.get("E2E_FAULTS")
    if not spec:
        return
    for item in spec.split(","):
        point, _, seconds = item.partition(":")
        if point.strip() == name:
            marker = os.environ.get("E2E_FAULTS_MARKER")
            if marker:  # tells the test the process has reached the point
                with open(marker, "a") as fh:
                    fh.write(f"{name} {os.getpid()}\n")
            time.sleep(float(seconds or 5))
