"""The desktop's apps: the plugins' lists, the launcher script run for real, and the openbox menu."""

from __future__ import annotations

import shlex
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from orchestrator.desktop import apps
from orchestrator.model.errors import PluginError
from solvers.base import DesktopApp, DesktopContext
from solvers.calculix import CalculiX, CalculiXOptions
from solvers.command import Command, CommandOptions
from solvers.openfoam import OpenFOAM, OpenFOAMOptions
from tests.unit.solver_cases import DATA

HOSTILE = "$(touch pwned); `touch pwned2` * 'q\" ;"


def desktop(tmp_path) -> DesktopContext:
    return DesktopContext("job0001", "run-001", tmp_path / "desktop" / "apps")


def launch(tmp_path: Path, found: list[DesktopApp], *args: str, path: str | None = None) -> subprocess.Popen:
    script = tmp_path / "apps.sh"
    script.write_text(apps.launcher("job0001", tmp_path / "work", apps.check(found)))
    env = {"PATH": path or "/usr/bin:/bin"}
    with open(tmp_path / "apps.log", "a") as log:  # as the session's log: it outlives the launcher
        return subprocess.Popen(["bash", str(script), *args], cwd=tmp_path, env=env, stdout=log, stderr=log)


def wait_file(path: Path, timeout: float = 5) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} never written")


def test_the_launcher_passes_every_argument_as_one_word_in_the_apps_folder(tmp_path):
    out = tmp_path / "work" / "run-001" / "argv.txt"
    out.parent.mkdir(parents=True)
    app = DesktopApp("Echo <&>", ("bash", "-c", 'printf "%s\\n" "$PWD" "$@" "$APP_SETTING" > argv.txt', "x", HOSTILE,
                                  "two words"), cwd="run-001", env={"APP_SETTING": HOSTILE + " env"})
    proc = launch(tmp_path, [app], "--session")
    assert proc.wait(10) == 0
    lines = wait_file(out).splitlines()
    assert lines == [str(tmp_path / "work" / "run-001"), HOSTILE, "two words", HOSTILE + " env"]
    assert not list(tmp_path.rglob("pwned*")), "a value reached the shell as code"


def test_only_session_apps_start_with_the_session_and_the_menu_number_starts_one(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    first = DesktopApp("A", ("touch", "a-started"))
    menu_only = DesktopApp("B", ("touch", "b-started"), start_with_session=False)
    assert launch(tmp_path, [first, menu_only], "--session").wait(10) == 0
    wait_file_exists(work / "a-started")
    time.sleep(0.2)
    assert not (work / "b-started").exists()
    assert launch(tmp_path, [first, menu_only], "2").wait(10) == 0
    wait_file_exists(work / "b-started")


def wait_file_exists(path: Path, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_an_app_waiting_for_its_folder_and_results_starts_once_they_appear_and_creates_neither(tmp_path):
    (tmp_path / "work").mkdir()
    run = tmp_path / "work" / "run-001"
    app = DesktopApp("Viewer", ("touch", "viewer-started"), cwd="run-001", wait_for="job.frd")
    assert launch(tmp_path, [app], "--session").wait(10) == 0  # the launcher itself never waits
    time.sleep(1.2)
    assert not run.exists(), "the launcher made the run's folder in the synced work folder"
    run.mkdir()  # as the sync does when the run starts
    time.sleep(1.2)
    assert not (run / "viewer-started").exists()
    (run / "job.frd").write_text("results")
    wait_file_exists(run / "viewer-started", timeout=5)


def test_a_missing_program_is_skipped_with_a_note_and_the_others_still_start(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    found = [DesktopApp("Files", ("no-such-file-manager", "."), optional=True),
             DesktopApp("Viewer", ("no-such-viewer",)), DesktopApp("Touch", ("touch", "started"))]
    assert launch(tmp_path, found, "--session").wait(10) == 0
    output = (tmp_path / "apps.log").read_text()
    assert "Files skipped: no-such-file-manager is not installed (optional)" in output
    assert "Viewer skipped: no-such-viewer is not installed on the head node" in output
    wait_file_exists(work / "started")


@pytest.mark.parametrize("bad, field", [
    (DesktopApp("X", ("xterm",), cwd="../elsewhere"), "cwd"),
    (DesktopApp("X", ("xterm",), cwd="/etc"), "cwd"),
    (DesktopApp("X", ("cgx", "a"), wait_for="../a.frd"), "wait_for"),
    (DesktopApp("X", ()), "argv"),
    (DesktopApp("X", ("xterm", "a\nb")), "argv"),
    (DesktopApp("X", ("xterm",), files={"../x.py": ""}), "file name"),
    (DesktopApp("X", ("xterm",), files={"/etc/x.py": ""}), "file name"),
    (DesktopApp("X", ("xterm",), env={"A B": "1"}), "env"),
    (DesktopApp("", ("xterm",)), "name"),
])
def test_apps_a_launcher_cannot_carry_safely_are_refused_naming_the_field(bad, field):
    with pytest.raises(PluginError, match=field):
        apps.check([bad])


def test_two_apps_with_one_name_are_refused():
    with pytest.raises(PluginError, match="twice"):
        apps.check([DesktopApp("T", ("xterm",)), DesktopApp("T", ("pcmanfm",))])


def test_the_menu_lists_every_app_with_a_command_openbox_splits_back_into_the_launcher_call(tmp_path):
    launcher = tmp_path / "odd dir" / "apps.sh"
    found = [DesktopApp("Echo <&> \"x\"", ("true",)), DesktopApp("Files", ("pcmanfm", "."), start_with_session=False)]
    root = ET.fromstring(apps.menu(launcher, found))
    ns = {"ob": "http://openbox.org/3.4/menu"}
    menu = root.find("ob:menu", ns)
    assert menu is not None and menu.get("id") == "root-menu"
    items = [i for i in menu.findall("ob:item", ns) if i.find("ob:action", ns).get("name") == "Execute"]
    assert [i.get("label") for i in items] == ["Echo <&> \"x\"", "Files"]
    commands = [shlex.split(i.find("ob:action/ob:command", ns).text) for i in items]
    assert commands == [["bash", str(launcher), "1"], ["bash", str(launcher), "2"]]


def test_the_default_desktop_is_a_terminal_and_an_optional_file_manager_on_the_work_folder(tmp_path):
    found = Command().desktop_apps(CommandOptions(name="command", command=["true"]), desktop(tmp_path))
    assert [(a.argv[0], a.cwd, a.start_with_session, a.optional) for a in found] == [
        ("xterm", ".", True, False), ("pcmanfm", ".", False, True)]


def test_openfoam_opens_paraview_on_the_runs_copy_with_its_state_script(tmp_path):
    case = tmp_path / "my case"
    (case / "system").mkdir(parents=True)
    (case / "system" / "controlDict").write_text("endTime 1;\n")
    ctx = desktop(tmp_path)
    found = OpenFOAM().desktop_apps(OpenFOAMOptions(name="openfoam", application="icoFoam", case=str(case)), ctx)
    paraview = found[0]
    assert paraview.argv == ("paraview", "-geometry", "800x760+0+0", f"--script={ctx.apps_dir / 'paraview_case.py'}")
    assert (paraview.cwd, paraview.wait_for, paraview.start_with_session) == (".", "run-001/constant/polyMesh", True)
    assert paraview.env == {"XDG_CONFIG_HOME": str(ctx.apps_dir / "paraview-config")}
    # no modal welcome dialog holding the state script back
    assert "ShowWelcomeDialog=false" in paraview.files["paraview-config/ParaView/ParaView5.11.0.ini"]
    script = paraview.files["paraview_case.py"]
    assert script.startswith("FOAM_FILE = 'my_case.foam'\nRUN_FOLDER = 'run-001'\n")  # ParaView moves into it
    compile(script, "paraview_case.py", "exec")  # the state script is Python ParaView can run
    assert [a.argv[0] for a in found[1:]] == ["xterm", "pcmanfm"] and found[1].cwd == "run-001"
    apps.check(found)


def test_calculix_opens_graphix_on_the_jobs_results_once_written(tmp_path):
    opts = CalculiXOptions.model_validate({"name": "calculix", "input": str(DATA / "cantilever.inp"),
                                           "jobname": "beam"})
    found = CalculiX().desktop_apps(opts, desktop(tmp_path))
    assert (found[0].argv, found[0].cwd, found[0].wait_for) == (("cgx", "-v", "beam.frd", "beam.inp"), "run-001",
                                                                  "beam.frd")
    apps.check(found)


def test_starccm_attaches_its_client_to_the_batch_server_when_the_port_is_fixed(tmp_path):
    from solvers.starccm import StarCCM, StarCCMOptions

    base = {"name": "starccm", "sim": str(DATA / "pipe.sim")}
    attached = StarCCM().desktop_apps(StarCCMOptions.model_validate({**base, "server_port": 47001}), desktop(tmp_path))
    assert attached[0].argv == ("starccm+", "-host", "localhost", "-port", "47001")
    assert attached[0].start_with_session and attached[0].cwd == "run-001"
    apps.check(attached)
    alone = StarCCM().desktop_apps(StarCCMOptions.model_validate(base), desktop(tmp_path))
    assert [a.argv[0] for a in alone] == ["xterm", "pcmanfm"]  # no port: no server to attach to


def viewer_desktop(tmp_path, run_copy: Path | None = None) -> DesktopContext:
    return DesktopContext("job0001", "run-001", tmp_path / "desktop" / "apps",
                          run_copy if run_copy is not None else tmp_path / "work" / "run-001")


def test_mechanical_opens_the_mapdl_gui_in_its_own_folder_on_a_copy_of_the_results_once_written(tmp_path):
    from solvers.mechanical import Mechanical, MechanicalOptions

    opts = MechanicalOptions.model_validate({"name": "mechanical", "input": str(DATA / "beam.dat"),
                                             "jobname": "beam", "version": "232"})
    ctx = viewer_desktop(tmp_path)
    found = Mechanical().desktop_apps(opts, ctx)
    viewer = found[0]
    assert viewer.argv == ("ansys232", "-g", "-j", "e2e_view", "-dir", str(ctx.apps_dir / "mapdl-view"), "-s", "read")
    assert (viewer.cwd, viewer.wait_for, viewer.start_with_session) == ("run-001", "beam.rst", True)
    # the viewer's working folder (its .log/.db/.lock) is the desktop's, never the synced run's copy
    assert not (ctx.apps_dir / "mapdl-view").is_relative_to(tmp_path / "work")
    start, latest = viewer.files["mapdl-view/start.ans"], viewer.files["mapdl-view/e2e_latest.mac"]
    assert "*ABBR,LATEST,E2E_LATEST" in start.splitlines() and start.splitlines()[-1] == "E2E_LATEST"
    lines = [line for line in latest.splitlines() if not line.startswith("!")]
    assert lines == [f"/COPY,'{tmp_path / 'work' / 'run-001' / 'beam'}','rst',,'snapshot','rst'", "/POST1",
                     "FILE,'snapshot','rst'", "SET,LAST", "PLNSOL,U,SUM"]
    assert [a.argv[0] for a in found[1:]] == ["xterm", "pcmanfm"] and found[1].cwd == "run-001"
    apps.check(found)


@pytest.mark.parametrize("run_copy", [None, "/srv/e2e,jobs/work/run-001", "/srv/it's/work/run-001"])
def test_mechanical_has_no_viewer_where_apdl_could_not_carry_the_runs_path(tmp_path, run_copy):
    from solvers.mechanical import Mechanical, MechanicalOptions

    opts = MechanicalOptions.model_validate({"name": "mechanical", "input": str(DATA / "beam.dat")})
    ctx = DesktopContext("job0001", "run-001", tmp_path / "apps", Path(run_copy) if run_copy else None)
    assert [a.argv[0] for a in Mechanical().desktop_apps(opts, ctx)] == ["xterm", "pcmanfm"]


def test_electronics_opens_a_copy_of_the_locked_project_and_leaves_the_runs_own_untouched(tmp_path, monkeypatch):
    import builtins
    import hashlib
    import sys
    import types

    from solvers.electronics import Electronics, ElectronicsOptions

    opts = ElectronicsOptions.model_validate({"name": "electronics", "project": str(DATA / "patch.aedt"),
                                              "executable": "/opt/AnsysEM/v241/Linux64/ansysedt"})
    ctx = viewer_desktop(tmp_path)
    found = Electronics().desktop_apps(opts, ctx)
    viewer = found[0]
    assert viewer.argv == ("/opt/AnsysEM/v241/Linux64/ansysedt", "-RunScript", str(ctx.apps_dir / "aedt_view.py"))
    assert (viewer.cwd, viewer.wait_for) == ("run-001", "patch.aedt")
    apps.check(found)
    # the run's copy as the batch solve leaves it mid-run: the project locked, one pass solved
    run = ctx.run_copy
    (run / "patch.aedtresults" / "HFSSDesign1.results").mkdir(parents=True)
    (run / "patch.aedt").write_text((DATA / "patch.aedt").read_text())
    (run / "patch.aedt.lock").write_text("123")
    (run / "patch.aedtresults" / "HFSSDesign1.results" / "pass-001").write_text("delta_s 0.27\n")
    before = {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in run.rglob("*")
              if p.is_file()}
    opened: list[str] = []

    class Desktop:  # AEDT's oDesktop, as far as the script uses it
        def GetProjectList(self):  # noqa: N802
            return [Path(p).stem for p in opened]

        def CloseProject(self, name):  # noqa: N802
            opened[:] = [p for p in opened if Path(p).stem != name]

        def OpenProject(self, path):  # noqa: N802
            assert not Path(path + ".lock").exists(), "opened a locked project"
            opened.append(path)

    env = types.ModuleType("ScriptEnv")
    env.Initialize = lambda product: setattr(builtins, "oDesktop", Desktop())
    monkeypatch.setitem(sys.modules, "ScriptEnv", env)
    script = viewer.files["aedt_view.py"]
    for _ in range(2):  # Tools > Run Script again: a fresh copy replaces the first
        exec(compile(script, "aedt_view.py", "exec"), {"__name__": "__main__"})
    monkeypatch.delattr(builtins, "oDesktop")
    copy = ctx.apps_dir / "aedt-view" / "patch.aedt"
    assert opened == [str(copy)]
    assert (copy.parent / "patch.aedtresults" / "HFSSDesign1.results" / "pass-001").read_text() == "delta_s 0.27\n"
    after = {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in run.rglob("*")
             if p.is_file()}
    assert after == before, "the viewer changed the run's copy"
