"""DesktopService on the local backend with the real session script: a head node without Xvnc fails clearly."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest

from orchestrator.cluster.local import LocalBackend
from orchestrator.desktop.service import DesktopService, desktop_record
from orchestrator.model.events import EventKind
from orchestrator.model.paths import JobPaths
from orchestrator.model.services import ServiceContext
from orchestrator.model.settings import Settings
from orchestrator.model.spec import spec_for_store, validate_spec
from orchestrator.model.states import DesktopState


@pytest.fixture(scope="module")
def no_xvnc_path(tmp_path_factory) -> str:
    return path_without(tmp_path_factory.mktemp("no-xvnc"), "Xvnc")


def path_without(folder: Path, *missing: str) -> str:
    """A PATH with every program of this machine's PATH except `missing` (symlinks in one folder)."""
    farm = folder / "bin"
    farm.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            target = farm / entry.name
            if entry.name not in missing and not target.exists() and os.access(entry.path, os.X_OK):
                target.symlink_to(entry.path)
    return str(farm)


@pytest.fixture
def ctx(tmp_path, store):
    settings = Settings(home=tmp_path / "home", redis_url="redis://unused", local_nodes=1, local_cores_per_node=1)
    spec = validate_spec({"name": "j", "solver": {"name": "command", "command": ["true"]},
                          "desktop": {"access": ["192.0.2.0/24"]}})
    job_id = store.create_job(name="j", owner="ann", spec=spec_for_store(spec), backend="local", solver="command")
    backend = LocalBackend(settings)
    paths = JobPaths.for_job(settings.root, job_id)
    paths.work.mkdir(parents=True)
    return ServiceContext(job=store.get_job(job_id), spec=spec, backend=backend, nodes=backend.inventory(),
                          paths=paths, store=store, settings=settings)


def test_a_head_node_without_xvnc_fails_the_desktop_with_the_package_to_install(ctx, no_xvnc_path):
    settings = ctx.settings.model_copy(update={"job_path": no_xvnc_path})  # the session's PATH (E2E_JOB_PATH)
    ctx = dataclasses.replace(ctx, settings=settings, backend=LocalBackend(settings))
    service = DesktopService()

    service.start(ctx)

    rec = desktop_record(ctx.store.get_job(ctx.job_id))
    assert rec.state is DesktopState.FAILED and rec.permanent is True
    assert "Xvnc is not installed" in rec.reason and "tigervnc-standalone-server" in rec.reason
    events = [e.data for e in ctx.store.events(ctx.job_id) if e.kind is EventKind.DESKTOP]
    assert events[-1] == {"state": "failed", "reason": rec.reason}
    # stored as the JSON the API shows: only the fields the service set
    stored = json.loads(ctx.store._r.hget(ctx.store._keys.job(ctx.job_id), "desktop"))
    assert stored["state"] == "failed" and "vnc_port" not in stored and "ready_at" not in stored
    # nothing is retried, and stopping a failed desktop is immediate
    service.supervise(ctx)
    service.start(ctx)
    assert desktop_record(ctx.store.get_job(ctx.job_id)).state is DesktopState.FAILED
    assert service.stop(ctx) is True
    assert desktop_record(ctx.store.get_job(ctx.job_id)).state is DesktopState.STOPPED


def without_xvnc(ctx: ServiceContext, path: str) -> ServiceContext:
    """The context with a session PATH lacking Xvnc (E2E_JOB_PATH): the session fails at once, nothing stays up."""
    settings = ctx.settings.model_copy(update={"job_path": path})
    return dataclasses.replace(ctx, settings=settings, backend=LocalBackend(settings))


def test_session_files_keep_secrets_private_and_the_script_parses(ctx, no_xvnc_path):
    ctx = without_xvnc(ctx, no_xvnc_path)
    DesktopService().start(ctx)
    desk = ctx.paths.root / "desktop"
    assert oct(desk.stat().st_mode & 0o777) == "0o700"  # passwd and the gateway's token live in here
    assert oct((desk / "passwd").stat().st_mode & 0o777) == "0o600"
    assert subprocess.run(["bash", "-n", str(desk / "session.sh")]).returncode == 0
    script = (desk / "session.sh").read_text()
    assert "-SecurityTypes VncAuth" in script and "-localhost" in script and "-geometry 1280x800" in script
    assert str(ctx.paths.work) in script


def test_the_session_starts_the_plugins_apps_and_openbox_lists_them_in_its_menu(ctx, no_xvnc_path):
    ctx = without_xvnc(ctx, no_xvnc_path)
    DesktopService().start(ctx)
    desk = ctx.paths.root / "desktop"
    launcher = (desk / "apps.sh").read_text()
    assert subprocess.run(["bash", "-n", str(desk / "apps.sh")]).returncode == 0
    assert "start Terminal . '' false -- xterm" in launcher and "pcmanfm" in launcher  # the command plugin's
    assert "<command>bash " + str(desk / "apps.sh") + " 1</command>" in (desk / "menu.xml").read_text()
    script = (desk / "session.sh").read_text()
    assert f"--startup 'bash {desk / 'apps.sh'} --session'" in script
    assert '<file>$desk/menu.xml</file>' in script and '--config-file "$desk/rc.xml"' in script


def test_every_desktop_starts_the_job_panel_first_and_lists_it_in_the_menu(ctx, no_xvnc_path):
    from orchestrator.desktop.service import PANEL_SOURCE

    ctx = without_xvnc(ctx, no_xvnc_path)
    DesktopService().start(ctx)
    desk = ctx.paths.root / "desktop"
    assert (desk / "panel.py").read_bytes() == PANEL_SOURCE.read_bytes()  # shipped beside the session
    launcher = (desk / "apps.sh").read_text()
    first = next(line.strip() for line in launcher.splitlines() if line.strip().startswith("1)"))
    assert first.startswith("1) start 'Job panel' . '' false -- sh -c ") and first.endswith(f"panel {desk}/panel.py ;;")
    assert "exec /usr/bin/python3 -s" in first  # the system python3, where python3-tk is
    assert "2) start Terminal" in launcher  # the plugin's apps after it
    session = launcher[launcher.index("= --session ]"):]  # what starts with the session
    assert session.index("app 1") < session.index("app 2")
    assert '<item label="Job panel"><action name="Execute"><command>bash ' + str(desk / "apps.sh") + " 1</command>" \
        in (desk / "menu.xml").read_text()


def test_a_plugins_unsafe_app_costs_its_apps_not_the_desktop(ctx, monkeypatch):
    from solvers.base import DesktopApp
    from solvers.command import Command

    monkeypatch.setattr(Command, "desktop_apps", lambda self, options, dctx: [DesktopApp("X", ("x",), cwd="../out")])
    found = DesktopService().apps(ctx, ctx.paths.root / "desktop")
    assert [a.argv[0] for a in found] == ["xterm", "pcmanfm"]
    warnings = [e.data["message"] for e in ctx.store.events(ctx.job_id) if e.kind is EventKind.WARNING]
    assert any("cwd '../out' must be relative" in w for w in warnings), warnings


def test_session_script_quotes_hostile_paths(ctx, tmp_path):
    from dataclasses import replace

    hostile = tmp_path / "we ird$(touch pwned)"
    odd = replace(ctx, paths=JobPaths(hostile))
    script = DesktopService().session_script(odd, hostile / "desktop")
    assert subprocess.run(["bash", "-n"], input=script.encode()).returncode == 0
    assert "'" + str(hostile / "desktop") + "'" in script


def test_a_plugins_main_window_is_given_the_desktop_left_of_the_job_panel():
    from orchestrator.desktop.panel_app import MARGIN, WIDTH
    from orchestrator.desktop.service import main_area

    assert main_area("1280x800") == (0, 0, 1280 - WIDTH - MARGIN - 8, 792)  # 796 px: clear of the panel
    assert main_area("1024x768") == (0, 0, 640, 760)  # too narrow for both: usable, the panel on top of it
