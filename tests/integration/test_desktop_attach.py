"""The solvers' apps on the job's desktop, attached to the batch run on the cluster: the STAR-CCM+ client (the
emulator's `starccm+ -host H -port P`, File > Connect to Server) and the Fluent monitor (PyFluent's
connect_to_fluent on the run's -sifile server-info file; PyFluent's stand-in talks to the emulator). In the
real session (Xvnc, openbox) as the job's owner, each window shows the run's live iteration, which advances."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.model.paths import JobPaths
from orchestrator.worker.stack import free_port
from tests.conftest import require
from tests.integration.desktop_helpers import grab_display, require_desktop_tools, wait_desktop

from .conftest import Engine, make_settings, wait_for
from .test_solvers_e2e import DATA, EMULATORS, SAFE_PATH

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def emulator_engine(redis_url, tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("e2e-attach"), redis_url + "/6",
                             job_path=f"{EMULATORS}:{SAFE_PATH}")
    eng = Engine(settings, worker_env={"PATH": f"{EMULATORS}:{os.environ['PATH']}"})
    yield eng
    eng.close()


def _iteration(display: str, title: str = "STAR-CCM\\+ client") -> int:
    found = subprocess.run(["xdotool", "search", "--name", title], capture_output=True, text=True,
                           env={**os.environ, "DISPLAY": display}, timeout=10).stdout.split()
    for window in found:
        name = subprocess.run(["xdotool", "getwindowname", window], capture_output=True, text=True,
                              env={**os.environ, "DISPLAY": display}, timeout=10).stdout
        if m := re.search(r"iteration (\d+)", name):
            return int(m.group(1))
    return -1


def test_the_starccm_client_on_the_desktop_follows_the_running_batch_server(emulator_engine, tmp_path):
    require_desktop_tools()
    require(shutil.which("xdotool") is not None, "xdotool (apt-get install xdotool)")
    shutil.copy(DATA / "pipe.sim", tmp_path / "pipe.sim")
    client = emulator_engine.client
    job_id = client.submit_data({"name": "attach", "solver": {
        "name": "starccm", "sim": str(tmp_path / "pipe.sim"), "max_steps": 100000, "server_port": free_port()},
        "desktop": {"enabled": True, "geometry": "1024x768"},
        "cluster": {"backend": "local", "nodes": 1, "cores_per_node": 1}})
    try:
        rec = wait_desktop(emulator_engine, job_id)
        assert rec.state == "ready", rec.reason
        display = ":" + (JobPaths.for_job(emulator_engine.settings.root, job_id).root / "desktop" /
                         "display").read_text().strip()
        try:
            first = wait_for(lambda: (n := _iteration(display)) > 0 and n, 60,
                             "the attached client's window showing an iteration")
        except AssertionError as exc:  # CI saw this once: say where the run, the session and its windows stood
            raise AssertionError(f"{exc}; {_where(emulator_engine, job_id, display)}") from None
        later = wait_for(lambda: (n := _iteration(display)) > first and n, 30, "the iteration advancing")
        assert later > first
        if os.environ.get("E2E_SCREENSHOT_DIR"):  # how docs/desktop-starccm-attach.png was taken
            grab_display(display[1:], Path(os.environ["E2E_SCREENSHOT_DIR"]) / "desktop-starccm-attach.png")
        # the client is the job owner's, like every app of the session
        pids = subprocess.run(["pgrep", "-f", "starccm\\+ -host localhost"], capture_output=True,
                              text=True).stdout.split()
        owner = client.status(job_id).account
        if owner:
            import pwd

            uids = {Path(f"/proc/{p}/status").read_text().split("Uid:")[1].split()[0] for p in pids}
            assert uids == {str(pwd.getpwnam(owner).pw_uid)}, uids
    finally:
        client.terminate(job_id)
        emulator_engine.wait_job_terminal(job_id, timeout=90)


def _where(engine, job_id: str, display: str) -> str:
    run = engine.client.status(job_id).runs_detail[0]
    paths = JobPaths.for_job(engine.settings.root, job_id)
    tails = {}
    for path in (paths.run(run.id).root / (run.log_file or "log"), paths.root / "desktop" / "session.log"):
        tails[path.name] = path.read_text(errors="replace")[-1200:] if path.is_file() else "(none)"
    windows = subprocess.run(["xdotool", "search", "--name", "."], capture_output=True, text=True,
                             env={**os.environ, "DISPLAY": display}, timeout=10).stdout.split()
    names = [subprocess.run(["xdotool", "getwindowname", w], capture_output=True, text=True, timeout=10,
                            env={**os.environ, "DISPLAY": display}).stdout.strip() for w in windows[:20]]
    return f"run {run.state.value} ({run.reason}); windows {names}; logs {tails}"


def _owner_uids(pattern: str) -> set[str]:
    pids = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return {Path(f"/proc/{p}/status").read_text().split("Uid:")[1].split()[0] for p in pids}


def test_the_fluent_monitor_on_the_desktop_follows_the_running_batch_solver(emulator_engine, tmp_path):
    require_desktop_tools()
    require(shutil.which("xdotool") is not None, "xdotool (apt-get install xdotool)")
    shutil.copy(DATA / "elbow.cas.h5", tmp_path / "elbow.cas.h5")
    client = emulator_engine.client
    # the Python "with ansys-fluent-core": the system's, with PyFluent's stand-in on its path
    job_id = client.submit_data({"name": "attach-fluent", "solver": {
        "name": "fluent", "case": str(tmp_path / "elbow.cas.h5"), "iterations": 100000, "autosave_every": 100000,
        "attach": True, "monitor_python": str(EMULATORS / "pyfluent" / "python3")},
        "desktop": {"enabled": True, "geometry": "1024x768"},
        "cluster": {"backend": "local", "nodes": 1, "cores_per_node": 1}})
    try:
        rec = wait_desktop(emulator_engine, job_id)
        assert rec.state == "ready", rec.reason
        paths = JobPaths.for_job(emulator_engine.settings.root, job_id)
        display = ":" + (paths.root / "desktop" / "display").read_text().strip()
        first = wait_for(lambda: (n := _iteration(display, "Fluent monitor")) > 0 and n, 60,
                         "the Fluent monitor's window showing an iteration")
        later = wait_for(lambda: (n := _iteration(display, "Fluent monitor")) > first and n, 30,
                         "the monitor's iteration advancing")
        assert later > first
        if os.environ.get("E2E_SCREENSHOT_DIR"):  # how docs/desktop-fluent-attach.png was taken
            grab_display(display[1:], Path(os.environ["E2E_SCREENSHOT_DIR"]) / "desktop-fluent-attach.png")
        # the server-info file the monitor read: private in the work copy, its password on no command line
        info = paths.work_of(client.status(job_id).current_run) / "fluent-server-info.txt"
        assert info.stat().st_mode & 0o777 == 0o600
        password = info.read_text().splitlines()[1].encode()
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                assert password not in Path(f"/proc/{pid}/cmdline").read_bytes(), pid
            except OSError:
                pass
        monitor_uids = _owner_uids("fluent_monitor.py fluent-server-info.txt")
        assert monitor_uids
        owner = client.status(job_id).account
        if owner:  # the monitor is the job owner's, like every app of the session
            import pwd

            assert monitor_uids == {str(pwd.getpwnam(owner).pw_uid)}, monitor_uids
    finally:
        client.terminate(job_id)
        emulator_engine.wait_job_terminal(job_id, timeout=90)
