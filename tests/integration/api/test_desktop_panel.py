"""The job panel in a real desktop session (Xvnc, openbox, Tk) over the real API: its window appears, it runs as
the job's account with only E2E_JOB/E2E_SERVER/E2E_TOKEN of the engine's variables and the token on no
argv, and clicking its buttons with xdotool freezes and resumes, pauses, edits, restarts and (after the
confirmation) terminates the job."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.cluster.identity import lookup
from orchestrator.desktop.panel_app import POLL
from orchestrator.model.errors import UserError
from orchestrator.model.paths import JobPaths
from tests.conftest import require
from tests.integration.api.conftest import api_os_user
from tests.integration.conftest import wait_for
from tests.integration.desktop_helpers import grab_display, require_desktop_tools, session_processes, wait_desktop

pytestmark = pytest.mark.integration
FAILED_SHOT = Path(os.environ.get("TMPDIR", "/tmp")) / "desktop-panel-failed.png"

# progress and a falling residual twice a second; a pause (SIGTERM) exits cleanly, a restart continues from the
# step the run directory holds
LOOP = ("trap 'exit 0' TERM; i=$(cat step 2>/dev/null || echo 0); while [ \"$i\" -lt 600 ]; do i=$((i+1)); "
        "echo \"$i\" > step; echo \"progress: $i/600\"; echo \"residual: p $(awk \"BEGIN{print exp(-$i/40)}\")\"; "
        "sleep 0.5 & wait $!; done")


def _panel_spec(name: str) -> dict:
    return {"name": name, "solver": {"name": "command", "command": ["bash", "-c", LOOP]},
            "desktop": {"enabled": True}}


def _places(desk: Path) -> dict | None:
    try:
        return json.loads((desk / "panel.json").read_text())
    except (OSError, ValueError):
        return None


def _tail(path: Path) -> str:
    try:
        return path.read_text()[-3000:]
    except OSError:
        return f"(no {path.name})"


def _click(display: str, xy: list[int], last: bool = False) -> None:
    """A real pointer click at root coordinates in the session's display (the last one may end the session, and
    its X server, before xdotool returns: what it did is checked through the API)."""
    # from the corner: `mousemove --sync` to where the pointer already is waits for a move that never comes
    done = subprocess.run(["xdotool", "mousemove", "--sync", "3", "3", "mousemove", "--sync", str(xy[0]), str(xy[1]),
                           "click", "1"],
                          env={**os.environ, "DISPLAY": f":{display}"}, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0 or (last and "connection" in done.stderr), done.stderr


def _press(desk: Path, display: str, label: str) -> None:
    """Click a panel button once the panel shows it enabled (it has seen the job accept that command)."""
    places = wait_for(lambda: (lambda p: p if label in p.get("enabled", []) else None)(_places(desk) or {}), 15,
                      f"the panel's {label} button enabled")
    _click(display, places["buttons"][label])


def open_edit_form(desk: Path, display: str, has: str = "apply", attempts: int = 3) -> dict:
    """Press Edit until the form shows a field named `has`; the form's places. A click can be lost while
    another window maps or holds the pointer (seen with ParaView and, under CI's load, the panel's own redraw):
    the form is what the callers test, so the button is pressed again if no form came."""
    for attempt in range(attempts):
        _press(desk, display, "Edit")
        try:
            return wait_for(lambda: (d := (_places(desk) or {}).get("dialog", {})).get(has) and d.get("apply") and d,
                            8, f"the edit form with {has!r}")
        except AssertionError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _run(doc: dict) -> dict:
    return next(r for r in doc["runs_detail"] if r["id"] == doc["current_run"])


def test_the_panel_shows_and_controls_the_job_as_its_owner(engine, api, tokens, http):
    require_desktop_tools()
    require(shutil.which("xdotool") is not None, "xdotool (apt-get install --no-install-recommends xdotool)")
    ok = subprocess.run(["/usr/bin/python3", "-c", "import tkinter"], capture_output=True).returncode == 0
    require(ok, "tkinter for the system python3 (apt-get install --no-install-recommends python3-tk)")
    assert api.port == engine.settings.api_port, "the API is not served where the engine tells desktops it is"
    alice = http("alice")
    job_id = alice.post("/jobs", json={"spec": _panel_spec("panel")}).json()["id"]
    desk, rec = JobPaths.for_job(engine.settings.root, job_id).root / "desktop", None
    try:
        rec = wait_desktop(engine, job_id)
        assert rec.state == "ready", rec.reason
        env = {"DISPLAY": f":{rec.display}", "PATH": os.environ["PATH"]}

        def window() -> str:
            found = subprocess.run(["xdotool", "search", "--name", f"^e2e job {job_id}$"], env=env,
                                   capture_output=True, text=True, timeout=10)
            return found.stdout.strip()

        wait_for(window, 30, "the panel window in the session's display")

        # the panel's process: the job owner's, only the job's three variables of the engine's, no token on argv
        pgid = int((desk / "pgid").read_text())
        pid = wait_for(lambda: next((p for p in session_processes(pgid)
                                     if b"panel.py" in Path(f"/proc/{p}/cmdline").read_bytes()), None), 10, "panel")
        proc_env = dict(item.split("=", 1) for item in
                        Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in item)
        engine_vars = {k for k in proc_env if k.startswith(("E2E_", "REDIS", "CELERY"))}
        assert engine_vars <= {"E2E_JOB", "E2E_SERVER", "E2E_TOKEN", "E2E_WORK", "E2E_TITLE"}, engine_vars
        assert proc_env["E2E_JOB"] == job_id and proc_env["E2E_TOKEN"].startswith("e2e_")
        uid_line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("Uid:"))
        owner = api_os_user("alice")
        if owner:
            assert [int(v) for v in uid_line.split()[1:]] == [lookup(owner).uid] * 4, uid_line
        for other in filter(str.isdigit, os.listdir("/proc")):
            try:
                assert proc_env["E2E_TOKEN"].encode() not in Path(f"/proc/{other}/cmdline").read_bytes()
            except OSError:
                pass

        # Pause: the run stops on the panel's click
        wait_for(lambda: _run(alice.get(f"/jobs/{job_id}").json())["state"] == "RUNNING", 30, "the run running")
        if os.environ.get("E2E_PANEL_SCREENSHOT"):  # docs/desktop-panel.png: the panel with a few steps plotted
            wait_for(lambda: ((_run(alice.get(f"/jobs/{job_id}").json()).get("progress") or {}).get("step") or 0)
                     >= 16, 30, "16 steps")
            time.sleep(2 * POLL)
            assert grab_display(rec.display, Path(os.environ["E2E_PANEL_SCREENSHOT"]))
        # Freeze suspends the run in place, Resume continues it
        _press(desk, rec.display, "Freeze")
        wait_for(lambda: _run(alice.get(f"/jobs/{job_id}").json())["state"] == "FROZEN", 30, "the run FROZEN")
        _press(desk, rec.display, "Resume")
        wait_for(lambda: _run(alice.get(f"/jobs/{job_id}").json())["state"] == "RUNNING", 30, "the run resumed")
        _press(desk, rec.display, "Pause")
        wait_for(lambda: _run(alice.get(f"/jobs/{job_id}").json())["state"] == "PAUSED", 30, "the run PAUSED")
        # Edit: the form's free key=value line becomes a new revision of the spec
        form = open_edit_form(desk, rec.display)
        _click(rec.display, form["free"])
        typed = subprocess.run(["xdotool", "type", "--delay", "5", "description=edited in the panel"],
                               env=env, capture_output=True, text=True, timeout=20)
        assert typed.returncode == 0, typed.stderr
        _click(rec.display, form["apply"])
        wait_for(lambda: alice.get(f"/jobs/{job_id}").json()["spec"].get("description") == "edited in the panel",
                 15, "the edit recorded")
        # Restart continues it (a second attempt, from the step it had reached)
        _press(desk, rec.display, "Restart")
        wait_for(lambda: (lambda r: r["state"] == "RUNNING" and r["attempt"] == 2)(
            _run(alice.get(f"/jobs/{job_id}").json())), 30, "the run restarted")
        # Terminate asks first; the confirmation ends the job
        _press(desk, rec.display, "Terminate")
        dialog = wait_for(lambda: (_places(desk) or {}).get("dialog", {}).get("confirm"), 10, "the confirmation")
        assert alice.get(f"/jobs/{job_id}").json()["state"] == "UP"  # nothing happens before the confirmation
        _click(rec.display, dialog, last=True)
        wait_for(lambda: alice.get(f"/jobs/{job_id}").json()["state"] in ("TERMINATING", "TERMINATED"), 30,
                 "the job terminating")
    except AssertionError:
        if rec and rec.display:  # what the desktop showed instead
            grab_display(rec.display, FAILED_SHOT)
            print("panel.json:", _places(desk), "\nsession.log:", _tail(desk / "session.log"))
        raise
    finally:
        with contextlib.suppress(UserError):  # the test's own Terminate may have ended it already
            engine.client.terminate(job_id)
        engine.wait_job_terminal(job_id, timeout=60)
