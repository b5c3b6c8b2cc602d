"""Mechanical's and Electronics' results on the job's desktop, read-only (the emulators' GUIs: `ansys241 -g` on a
copy of <job>.rst, `ansysedt -RunScript` on a copy of the project): in the real session (Xvnc, openbox) as the
job's owner, the viewer's window shows the run's live result (substep, adaptive pass) and follows it, and the
run's results are the same bytes with the same mtime however often the viewer reads them."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.model.paths import JobPaths
from tests.conftest import require
from tests.integration.desktop_helpers import grab_display, require_desktop_tools, wait_desktop

from .conftest import Engine, make_settings, wait_for
from .test_solvers_e2e import EMULATORS, SAFE_PATH

pytestmark = pytest.mark.integration

DECK = "/SOLU\nANTYPE,STATIC\nTIME,1\nNSUBST,{n}\nSOLVE\nFINISH\n"
PROJECT = "$begin 'AnsysProject'\n\tmax_passes = {n}\n\tconverge_at = 0\n$end 'AnsysProject'\n"
# solver -> (input file, its text, solver options, window title pattern, the last value, results in the run)
CASES = {
    "mechanical": ("beam.dat", DECK.format(n=60), {"input": "beam.dat", "jobname": "beam"},
                   r"MAPDL results beam\.rst substep (\d+)", 60, ("beam.rst",)),
    "electronics": ("patch.aedt", PROJECT.format(n=16), {"project": "patch.aedt"},
                    r"AEDT patch\.aedt pass (\d+), delta S", 16, ("patch.aedt", "patch.aedtresults")),
}


@pytest.fixture(scope="module")
def emulator_engine(redis_url, tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("e2e-viewers"), redis_url + "/7",
                             job_path=f"{EMULATORS}:{SAFE_PATH}")
    eng = Engine(settings, worker_env={"PATH": f"{EMULATORS}:{os.environ['PATH']}"})
    yield eng
    eng.close()


def _fact(display: str, pattern: str) -> int:
    env = {**os.environ, "DISPLAY": display}
    found = subprocess.run(["xdotool", "search", "--name", pattern.split(" ")[0]], capture_output=True, text=True,
                           env=env, timeout=10).stdout.split()
    for window in found:
        name = subprocess.run(["xdotool", "getwindowname", window], capture_output=True, text=True, env=env,
                              timeout=10).stdout
        if m := re.search(pattern, name):
            return int(m.group(1))
    return -1


def _state(root: Path, names: tuple[str, ...]) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file of the results (a folder's files included)."""
    files = [p for n in names for p in ([root / n] if (root / n).is_file() else sorted((root / n).rglob("*")))]
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in files if p.is_file()}


@pytest.mark.parametrize("solver", list(CASES))
def test_the_viewer_on_the_desktop_follows_the_runs_results_and_never_changes_them(emulator_engine, tmp_path,
                                                                                  solver):
    require_desktop_tools()
    require(shutil.which("xdotool") is not None, "xdotool (apt-get install xdotool)")
    name, text, options, pattern, last, results = CASES[solver]
    (tmp_path / name).write_text(text)
    options = {key: str(tmp_path / value) if value == name else value for key, value in options.items()}
    client = emulator_engine.client
    job_id = client.submit_data({"name": f"view-{solver}", "solver": {"name": solver, **options},
                                 "desktop": {"enabled": True, "geometry": "1024x768"},
                                 "cluster": {"backend": "local", "nodes": 1, "cores_per_node": 1}})
    try:
        rec = wait_desktop(emulator_engine, job_id)
        assert rec.state == "ready", rec.reason
        paths = JobPaths.for_job(emulator_engine.settings.root, job_id)
        display = ":" + (paths.root / "desktop" / "display").read_text().strip()
        first = wait_for(lambda: (n := _fact(display, pattern)) > 0 and n, 60, "the viewer showing a result")
        later = wait_for(lambda: (n := _fact(display, pattern)) > first and n, 30, "the viewer following the run")
        assert first < later
        wait_for(lambda: _fact(display, pattern) == last, 60, f"the viewer showing the run's last result ({last})")
        if os.environ.get("E2E_SCREENSHOT_DIR"):  # how docs/desktop-mechanical.png and -electronics.png were taken
            grab_display(display[1:], Path(os.environ["E2E_SCREENSHOT_DIR"]) / f"desktop-{solver}.png")
        run = client.status(job_id).current_run
        work, engine_copy = paths.work_of(run), paths.runs / run
        held = _state(work, results)
        snapshots = sorted((paths.root / "desktop" / "apps").rglob("*"))
        seen = {p: p.stat().st_mtime_ns for p in snapshots if p.is_file()}
        time.sleep(2.5)  # the viewer reads again every second
        assert _state(work, results) == held, "the results in the work folder changed while the viewer read them"
        assert {k: v[0] for k, v in _state(engine_copy, results).items()} == {k: v[0] for k, v in held.items()}
        reread = [p for p, mtime in seen.items() if p.exists() and p.stat().st_mtime_ns != mtime]
        assert reread, "the viewer did not read its copy again"
        # nothing of the viewer's own (its job's files, its copy) is in the synced work folder or the run
        for where in (work, engine_copy):
            assert not [p.name for p in where.rglob("*") if p.name.startswith(("e2e_view", "snapshot"))
                        or "aedt-view" in p.parts], where
        owner = client.status(job_id).account
        if owner:  # the viewer is the job owner's, like every app of the session
            import pwd

            pids = subprocess.run(["pgrep", "-f", "ansys241 -g|ansysedt -RunScript"], capture_output=True,
                                  text=True).stdout.split()
            uids = {Path(f"/proc/{p}/status").read_text().split("Uid:")[1].split()[0] for p in pids
                    if Path(f"/proc/{p}/status").exists() and str(paths.root) in Path(f"/proc/{p}/cmdline")
                    .read_text(errors="replace")}
            assert uids == {str(pwd.getpwnam(owner).pw_uid)}, uids
    finally:
        client.terminate(job_id)
        emulator_engine.wait_job_terminal(job_id, timeout=90)
