"""Benchmark part: submit an OpenFOAM job with the desktop on -> ParaView in its session showing the case
(bench/desktop.py runs it, beside its Xvnc-alone baseline).

Each sample: time.time() just before Client.submit() of the icoFoam cavity (endTime far off, so the run is live)
-> the first moment ParaView's render view, grabbed from the session's X display, holds more than 500 pixels of a
saturated colour (the colour map's ends: ParaView's GUI, its background, a solid mesh and an empty window are all
greys). The grab loop runs in the head node's system python3 (its PIL reads X displays), every 50 ms, in one
process per sample. The job is then terminated outside the timed window.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

# Runs in /usr/bin/python3: waits for the box (x y w h) of display argv[1] to hold > 500 saturated pixels
GRAB = """
import sys, time
from PIL import ImageGrab
display, x, y, w, h, until = sys.argv[1], *map(int, sys.argv[2:6]), float(sys.argv[6])
while time.time() < until:
    pixels = ImageGrab.grab(xdisplay=display).crop((x, y, x + w, y + h)).convert("RGB").getdata()
    if sum(1 for p in pixels if max(p) - min(p) > 80) > 500:
        print(time.time()); break
    time.sleep(0.05)
"""
CAVITY = Path("/usr/share/doc/openfoam-examples/examples/incompressible/icoFoam/cavity/cavity")


def missing() -> str | None:
    """What the ParaView figure lacks on this machine, or None."""
    for tool, package in (("paraview", "paraview python3-paraview"), ("icoFoam", "openfoam"),
                          ("xwininfo", "x11-utils")):
        if not shutil.which(tool):
            return f"{tool} is not installed (apt-get install --no-install-recommends {package})"
    if not CAVITY.is_dir():
        return "the OpenFOAM tutorials are not installed (apt-get install openfoam-examples)"
    if subprocess.run(["/usr/bin/python3", "-c", "import PIL.ImageGrab"], capture_output=True).returncode != 0:
        return "PIL for /usr/bin/python3 (apt-get install python3-pil)"
    return None


def _paraview_box(display: str) -> tuple[int, int, int, int] | None:
    """ParaView's render view in root coordinates: the right and lower part of its main window."""
    tree = subprocess.run(["xwininfo", "-root", "-tree", "-display", f":{display}"], capture_output=True, text=True,
                          timeout=10).stdout
    for line in tree.splitlines():
        if '"ParaView 5.' in line and (m := re.search(r"(\d+)x(\d+)[+-]\d+[+-]\d+\s+\+(-?\d+)\+(-?\d+)", line)):
            w, h, x, y = map(int, m.groups())
            return x + int(w * 0.35), y + int(h * 0.35), int(w * 0.6), int(h * 0.55)
    return None


def _wait(what: str, check, deadline: float, poll: float = 0.02) -> Any:
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise RuntimeError(f"timed out waiting for {what}")


def paraview_figures(client, samples: int, timeout: float) -> list[float]:
    """Seconds per sample, submit -> ParaView showing the case (see the module's docstring)."""
    from orchestrator.desktop.service import desktop_record
    from orchestrator.model.states import JOB_TERMINAL

    scratch = Path(tempfile.mkdtemp(prefix="e2e-bench-paraview-"))
    shutil.copytree(CAVITY, scratch / "cavity")
    subprocess.run(["chmod", "-R", "a+rX", str(scratch)], check=True)  # the job's account reads the case
    spec = {"name": "bench-paraview", "desktop": {"enabled": True},
            "solver": {"name": "openfoam", "application": "icoFoam", "case": str(scratch / "cavity"),
                       "parameters": {"endTime": 1000, "writeInterval": 20}}}
    seconds = []
    try:
        for _ in range(samples):
            started = time.time()
            deadline = started + timeout
            job_id = client.submit_data(spec)
            try:
                display = _wait("the desktop", lambda: desktop_record(client.store.get_job(job_id)).display,
                                deadline)
                box = _wait("the ParaView window", lambda: _paraview_box(display), deadline, poll=0.1)
                seen = subprocess.run(["/usr/bin/python3", "-c", GRAB, f":{display}", *map(str, box), str(deadline)],
                                      capture_output=True, text=True, timeout=timeout + 10).stdout.strip()
                if not seen:
                    raise RuntimeError("ParaView never showed the case's field")
                seconds.append(float(seen) - started)
            finally:
                client.terminate(job_id)
                client.wait(job_id, lambda d: d.state in JOB_TERMINAL, timeout=timeout)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return seconds
