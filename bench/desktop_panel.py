"""Benchmark part: the job panel's Pause click -> run PAUSED, against `e2e pause --wait` (bench/desktop.py runs it).

One job with the desktop on, submitted through the API (so its session has a job-scoped token and the panel
talks to the API), and one without, whose CLI pauses are the baseline. Each sample, alternating which goes
first: the run is RUNNING (after a restart) and the panel shows Pause enabled (its panel.json), then
  * panel: time.time() just before `xdotool mousemove X Y click 1` on the Pause button in the session's display
    -> this process reads the run PAUSED in the store (polled every 5 ms);
  * CLI: time.time() just before starting `e2e pause --wait JOB` (E2E_SERVER/E2E_TOKEN: through the same API)
    -> the command returns (it waits until the run is PAUSED).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# the solver: exits cleanly on the pause's SIGTERM, so the run is PAUSED
LOOP = "trap 'exit 0' TERM; while :; do sleep 0.2 & wait $!; done"


def missing() -> str | None:
    """What the panel figure lacks on this machine, or None."""
    if not shutil.which("xdotool"):
        return "xdotool is not installed (apt-get install --no-install-recommends xdotool)"
    if subprocess.run(["/usr/bin/python3", "-c", "import tkinter"], capture_output=True).returncode != 0:
        return "tkinter is missing for /usr/bin/python3 (apt-get install --no-install-recommends python3-tk)"
    return None


def _wait(what: str, check, timeout: float, poll: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def pause_figures(client, api_url: str, token: str, samples: int, timeout: float) -> dict[str, list[float]]:
    """Seconds per sample: {"panel": [...], "cli": [...]} (see the module's docstring)."""
    import httpx

    from orchestrator.desktop.service import desktop_record
    from orchestrator.model.paths import JobPaths

    http = httpx.Client(base_url=api_url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    solver = {"name": "command", "command": ["bash", "-c", LOOP]}
    panel_job = http.post("/jobs", json={"spec": {"name": "bench-panel", "solver": solver,
                                                  "desktop": {"enabled": True}}}).json()["id"]
    cli_job = http.post("/jobs", json={"spec": {"name": "bench-cli", "solver": solver,
                                                "desktop": {"enabled": False}}}).json()["id"]
    desk = JobPaths.for_job(client.settings.root, panel_job).root / "desktop"
    rec = _wait("the desktop", lambda: (lambda r: r if r.state in ("ready", "failed") else None)(
        desktop_record(client.store.get_job(panel_job))), timeout, 0.05)
    if rec.state != "ready":
        raise RuntimeError(f"the desktop failed: {rec.reason}")
    display = {**os.environ, "DISPLAY": f":{rec.display}"}
    cli_env = {**os.environ, "E2E_SERVER": api_url, "E2E_TOKEN": token}
    e2e = str(Path(sys.executable).with_name("e2e"))

    def run_state(job_id: str) -> str:
        return client.store.get_run(job_id, client.store.get_job(job_id).current_run).state.value

    def running(job_id: str) -> None:
        if run_state(job_id) == "PAUSED":
            http.post(f"/jobs/{job_id}/restart").raise_for_status()
        _wait(f"{job_id} running", lambda: run_state(job_id) == "RUNNING", timeout)

    def panel_sample() -> float:
        running(panel_job)

        def pause_button() -> list[int] | None:
            try:
                places = json.loads((desk / "panel.json").read_text())
            except (OSError, ValueError):
                return None
            return places["buttons"]["Pause"] if "Pause" in places.get("enabled", []) else None

        xy = _wait("the panel's Pause enabled", pause_button, timeout, 0.05)
        # away first: `mousemove --sync` to where the pointer already is waits (seconds) for a move that never comes
        subprocess.run(["xdotool", "mousemove", "--sync", "3", "3"], env=display, check=True, timeout=timeout)
        started = time.time()
        subprocess.run(["xdotool", "mousemove", "--sync", str(xy[0]), str(xy[1]), "click", "1"], env=display,
                       check=True, capture_output=True, timeout=timeout)
        _wait("the panel's pause", lambda: run_state(panel_job) == "PAUSED", timeout)
        return time.time() - started

    def cli_sample() -> float:
        running(cli_job)
        started = time.time()
        subprocess.run([e2e, "pause", "--wait", cli_job], env=cli_env, check=True, capture_output=True,
                       timeout=timeout)
        elapsed = time.time() - started
        assert run_state(cli_job) == "PAUSED"
        return elapsed

    found: dict[str, list[float]] = {"panel": [], "cli": []}
    try:
        panel_sample(), cli_sample()  # warm-up: the panel's first look, the CLI's first imports
        for i in range(samples):
            for name, sample in (("panel", panel_sample), ("cli", cli_sample))[::1 if i % 2 == 0 else -1]:
                found[name].append(sample())
    finally:
        for job_id in (panel_job, cli_job):
            http.post(f"/jobs/{job_id}/terminate")
        http.close()
    return found
