"""The solver's own post-processor on the live job's desktop, for real: ParaView on an OpenFOAM case and
CalculiX GraphiX on a ccx job's results, in the session's Xvnc, as the job's owner."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.cluster.identity import lookup
from orchestrator.desktop import connect
from orchestrator.model.paths import JobPaths
from tests.conftest import require
from tests.integration import probes
from tests.integration.conftest import CAVITY, wait_for
from tests.integration.desktop_helpers import (
    chromium,
    close_chromium,
    require_desktop_tools,
    session_processes,
    wait_desktop,
    wait_novnc_connected,
)
from tests.unit.solver_cases import DATA

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _tools():
    require_desktop_tools()
    require(shutil.which("xwininfo") is not None and shutil.which("xprop") is not None,
            "xwininfo and xprop (apt-get install x11-utils)")


@pytest.fixture(scope="module")
def bob(engine):
    return probes.owners(engine, "bob")["bob"]


def _windows(display: str) -> str:
    return subprocess.run(["xwininfo", "-root", "-tree", "-display", f":{display}"], capture_output=True,
                          text=True, timeout=10).stdout


def _window(display: str, title: str) -> tuple[int, tuple[int, int, int, int]] | None:
    """The id and on-screen box (x, y, width, height) of the top-level window whose title starts so."""
    for line in _windows(display).splitlines():
        if title in line:
            match = re.search(r"(\d+)x(\d+)[+-]\d+[+-]\d+\s+\+(-?\d+)\+(-?\d+)", line)
            if match:
                w, h, x, y = map(int, match.groups())
                return int(line.split()[0], 16), (x, y, w, h)
    return None


def _active_window(display: str) -> int | None:
    out = subprocess.run(["xprop", "-root", "-display", f":{display}", "_NET_ACTIVE_WINDOW"], capture_output=True,
                         text=True, timeout=10).stdout
    match = re.search(r"window id # (0x[0-9a-f]+)", out)
    return int(match.group(1), 16) if match else None


def _owned_app(engine, job_id: str, comm: str, uid: int) -> int:
    """The session's process named `comm` (it runs in the session's process group), checked to be the owner's."""
    desk = JobPaths.for_job(engine.settings.root, job_id).root / "desktop"
    pgid = int((desk / "pgid").read_text())
    try:
        pid = wait_for(lambda: next((p for p, c in session_processes(pgid).items() if c == comm), None), 90,
                       f"{comm} in the desktop session")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the session's log:\n{_log(desk)}") from None
    uid_line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("Uid:"))
    assert [int(v) for v in uid_line.split()[1:]] == [uid] * 4, uid_line
    return pid


def _log(desk: Path) -> str:
    log = desk / "session.log"
    return log.read_text()[-2000:] if log.exists() else "(no session.log)"


def test_an_openfoam_job_shows_paraview_on_its_live_case_as_the_owner(engine, bob, tmp_path):
    require(shutil.which("icoFoam") is not None and CAVITY.is_dir(), "OpenFOAM (openfoam, openfoam-examples)")
    require(shutil.which("paraview") is not None, "ParaView (apt-get install --no-install-recommends paraview "
                                                  "python3-paraview)")
    shutil.copytree(CAVITY, tmp_path / "cavity")
    grant = subprocess.run(["chmod", "-R", "a+rX", str(tmp_path)])
    assert grant.returncode == 0
    job_id = bob.submit_data({
        "name": "cavity", "desktop": {"enabled": True},
        "solver": {"name": "openfoam", "application": "icoFoam", "case": str(tmp_path / "cavity"),
                   "parameters": {"endTime": 0.5, "writeInterval": 20}},
        "cluster": {"backend": "local", "nodes": 1, "cores_per_node": 1}})
    try:
        rec = wait_desktop(engine, job_id)
        assert rec.state == "ready", rec.reason
        _owned_app(engine, job_id, "paraview", lookup("bob").uid)
        # the state script ran: the reader's .foam file is in the run's copy, and the main window is mapped
        work = JobPaths.for_job(engine.settings.root, job_id).work_of("run-001")
        wait_for(lambda: (work / "cavity.foam").exists(), 60, "cavity.foam in the work folder")
        window = wait_for(lambda: _window(rec.display, '"ParaView 5.'), 60, "the ParaView window")
        assert "Welcome to ParaView" not in _windows(rec.display)  # a modal dialog would hold the script back
        # on top of the terminal, focused
        wait_for(lambda: _active_window(rec.display) == window[0], 30, "ParaView focused")
        # docs/desktop-paraview.png is made with E2E_PARAVIEW_SCREENSHOT=docs/desktop-paraview.png
        shot = Path(os.environ.get("E2E_PARAVIEW_SCREENSHOT") or tmp_path / "desktop-paraview.png")
        _screenshot(engine, job_id, window[1], shot, next_time=lambda: _new_time(work))
    finally:
        engine.client.terminate(job_id)
        engine.wait_job_terminal(job_id, timeout=60)


def test_a_calculix_job_shows_graphix_on_its_results_as_the_owner(engine, bob, tmp_path):
    require(shutil.which("ccx") is not None, "CalculiX (apt-get install calculix-ccx)")
    require(shutil.which("cgx") is not None, "CalculiX GraphiX (apt-get install calculix-cgx)")
    deck = tmp_path / "cantilever.inp"
    shutil.copy(DATA / "cantilever.inp", deck)
    deck.chmod(0o644)
    job_id = bob.submit_data({"name": "beam", "desktop": {"enabled": True},
                              "solver": {"name": "calculix", "input": str(deck), "jobname": "beam"},
                              "cluster": {"backend": "local", "nodes": 1, "cores_per_node": 1}})
    try:
        rec = wait_desktop(engine, job_id)
        assert rec.state == "ready", rec.reason
        _owned_app(engine, job_id, "cgx", lookup("bob").uid)  # started once ccx wrote beam.frd
        wait_for(lambda: '"CalculiX GraphiX"' in _windows(rec.display), 30, "the cgx window")
    finally:
        engine.client.terminate(job_id)
        engine.wait_job_terminal(job_id, timeout=60)


def _new_time(work: Path) -> None:
    """A time directory written after ParaView opened the case (as the solver would, here in the work folder
    the desktop edits): 0.6 with a uniform pressure, so the view must change when ParaView picks it up."""
    later = work / "0.6"
    shutil.copytree(work / "0.5", later)
    p = (later / "p").read_text()
    (later / "p").write_text(re.sub(r"internalField\s+nonuniform.*?\)\s*;", "internalField uniform 0;", p,
                                    count=1, flags=re.S))
    bob = lookup("bob")
    for path in (later, *later.rglob("*")):  # the owner's, as the solver's files are
        os.chown(path, bob.uid, bob.gid)


def _screenshot(engine, job_id: str, box: tuple[int, int, int, int], target: Path, next_time) -> None:
    """The desktop as a user sees it through noVNC in Chromium, once ParaView has drawn the case: its render
    view shows the colour-mapped pressure field."""
    d = connect.desktop(engine.client, job_id)
    driver = chromium()
    try:
        driver.get(d.url)
        assert "Connected" in wait_novnc_connected(driver), "noVNC never connected"
        # pixels of a saturated colour (the colour map's blue and red ends): the GUI, the background, a solid
        # mesh and a black unpainted window are all greys, whatever the JPEG encoding adds at their edges
        colours = ("const c = document.querySelector('#noVNC_container canvas');"
                   "const d = c.getContext('2d').getImageData(...arguments).data; let n = 0;"
                   "for (let i = 0; i < d.length; i += 4) {"
                   " const hi = Math.max(d[i], d[i + 1], d[i + 2]), lo = Math.min(d[i], d[i + 1], d[i + 2]);"
                   " if (hi - lo > 80) n++; } return n;")
        x, y, w, h = box  # the render view: the right and lower part of ParaView's main window
        view = (x + int(w * 0.35), y + int(h * 0.35), int(w * 0.6), int(h * 0.55))
        try:
            wait_for(lambda: driver.execute_script(colours, *view) > 500, 60, "ParaView drawing the case's field")
            _save_canvas(driver, target)
            # a new time directory: ParaView's timer finds it and shows it, without anyone touching ParaView
            grab = ("return document.querySelector('#noVNC_container canvas').getContext('2d')"
                    ".getImageData(...arguments).data")
            driver.execute_script(f"window.e2eBefore = (() => {{ {grab}; }})();", *view)
            changed = (f"const now = (() => {{ {grab}; }})(); const was = window.e2eBefore; let n = 0;"
                       "for (let i = 0; i < now.length; i += 4) if (Math.abs(now[i] - was[i]) > 40"
                       " || Math.abs(now[i + 1] - was[i + 1]) > 40 || Math.abs(now[i + 2] - was[i + 2]) > 40) n++;"
                       "return n;")
            next_time()
            wait_for(lambda: driver.execute_script(changed, *view) > 1000, 30, "ParaView showing time 0.6")
        except AssertionError:  # what the desktop showed instead
            _save_canvas(driver, target.with_name("desktop-paraview-failed.png"))
            raise
    finally:
        close_chromium(driver)



def _save_canvas(driver, target: Path) -> None:
    """noVNC's canvas itself: headless Chromium's page screenshot can lag behind a canvas drawn into."""
    url = driver.execute_script("return document.querySelector('#noVNC_container canvas').toDataURL();")
    assert url.startswith("data:image/png;base64,")
    target.write_bytes(base64.b64decode(url.split(",", 1)[1]))
