"""Ansys Electronics Desktop (HFSS etc.) plugin: `ansysedt -ng -monitor -distributed -machinelist -batchsolve`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from .base import (
    TEMPLATES_ROOT,
    DesktopApp,
    DesktopContext,
    LaunchContext,
    Outcome,
    Prepared,
    Progress,
    RunFiles,
    RunMode,
    Secret,
    SolverOptions,
    SolverPlugin,
    terminal_and_files,
)
from .vendor import (
    InputFile,
    ansys_licence_env,
    attempt_name,
    copy_input,
    failed_on,
    hosts,
    note_error,
    safe_name,
    touch,
)

STOP_FILE = "e2e-stop"   # batch mode reads no stop file: run.sh ends the solve after the current pass
_PASS = re.compile(r"Adaptive Pass (\d+)(?: of (\d+))?(?:[^\n]*?Delta S(?: =|:)\s*([-+0-9.eE]+))?")
_FREQ = re.compile(r"Frequency (?:point|sweep) (\d+) of (\d+)")
_DONE = re.compile(r"[^\n]*Normal completion of simulation[^\n]*")
_CONVERGED = re.compile(r"[^\n]*Adaptive Passes converged[^\n]*")
# AEDT message-manager failures (PyAEDT-based runners treat these as fatal too)
_ERROR = re.compile(r"^\[(?:error|fatal)\][^\n]*|[^\n]*(?:Simulation aborted|Simulation failed|solver process "
                    r"terminated)[^\n]*", re.M | re.I)
_STOPPED = re.compile(r"[^\n]*e2e: stopped on request[^\n]*")
_MARKER = re.compile(r"e2e: completion marker (\S+) present")
_SETUP = r"^[A-Za-z0-9_][A-Za-z0-9_ .-]{0,63}$"


class ElectronicsOptions(SolverOptions):
    """`solver:` block for Ansys Electronics Desktop batch solves."""

    name: Literal["electronics"]
    project: InputFile(".aedt")
    design: str | None = Field(None, pattern=_SETUP, description="solve one design's setup (with setup)")
    setup: str | None = Field(None, pattern=_SETUP, description="the setup to solve; all setups when left out")
    executable: str = Field("ansysedt", pattern=r"^[A-Za-z0-9_./-]{1,256}$",
                            description="ansysedt on PATH, or e.g. /opt/AnsysEM/v241/Linux64/ansysedt")
    tasks_per_node: int = Field(1, ge=1, le=256, description="distributed tasks per machine")
    ram_percent: int = Field(90, ge=1, le=100)
    gpus_per_node: int = Field(0, ge=0, le=16)
    hpc_license: Literal["pool", "pack"] = "pool"
    mpi_vendor: Literal["Intel", "Microsoft"] = "Intel"
    license_file: Secret | None = Field(None, description="ANSYSLMD_LICENSE_FILE, e.g. 1055@licserver")
    li_servers: Secret | None = Field(None, description="ANSYSLI_SERVERS, e.g. 2325@licserver")


class Electronics(SolverPlugin):
    name = "electronics"
    Options = ElectronicsOptions
    summary = "Ansys Electronics Desktop: ansysedt -ng -monitor -distributed -machinelist list=... -batchsolve"
    # A killed solve leaves the lock behind, and the next open of the project refuses it.
    cleanup_patterns = ("*.aedt.lock", "*.aedt.q", "*.aedt.q.completed", STOP_FILE)

    def desktop_apps(self, options: ElectronicsOptions, ctx: DesktopContext) -> list[DesktopApp]:
        """The AEDT GUI on a copy of the run's project, read-only by construction: the batch solve holds
        <project>.aedt.lock, and the viewer never opens that project. `ansysedt -RunScript aedt_view.py` runs
        a script that copies the .aedt and its .aedtresults into the desktop's apps folder and opens the copy
        (Tools > Run Script again refreshes it). Then a terminal and a file manager on the run's copy."""
        viewer = aedt_viewer(options, ctx)
        return [*([viewer] if viewer else []), *terminal_and_files(ctx.run_id)]

    def prepare(self, options: ElectronicsOptions, ctx: LaunchContext) -> Prepared:
        project = safe_name(options.project.name)
        if ctx.mode is RunMode.FRESH or not (ctx.run_dir / project).exists():
            copy_input(options.project, ctx.run_dir, project)
            results = options.project.with_name(options.project.name + "results")
            if results.is_dir():  # solved data the user brought along: reused, as AEDT does
                copy_input(results, ctx.run_dir, project + "results")
        # list=host:tasks:cores:RAM%[:gpus], one entry per machine (PyAEDT's layout).
        entries = []
        for h in hosts(ctx):
            entry = f"{h.address}:{options.tasks_per_node}:{h.slots}:{options.ram_percent}%"
            entries.append(entry + (f":{options.gpus_per_node}" if options.gpus_per_node else ""))
        batch_options = [f"HFSS/HPCLicenseType={options.hpc_license}",
                         f"HFSS/MPIVendor={options.mpi_vendor}",
                         f"HFSS/NumCoresPerDistributedTask={max(1, ctx.nodes[0].slots // options.tasks_per_node)}",
                         "TempDirectory=./aedt-tmp"]
        (ctx.run_dir / "aedt-tmp").mkdir(exist_ok=True)
        target = f"{options.design}:Nominal:{options.setup}" if options.design and options.setup else None
        log_file = attempt_name("ansysedt", ".log", ctx.attempt)
        return Prepared(
            template="electronics/run.sh.j2",
            context={"executable": options.executable, "machinelist": "list=" + ",".join(entries),
                     "batch_options": " ".join(batch_options), "target": target, "project": project,
                     "log_file": log_file, "stop_file": STOP_FILE},
            log_file=log_file,
            env=ansys_licence_env(ctx, options),
        )

    def parse_progress(self, text: str, last: Progress | None) -> Progress | None:
        progress = (last or Progress()).model_copy(deep=True)
        found = False
        for number, total, delta in _PASS.findall(text):
            progress.step, found = float(number), True
            if total:
                progress.total = float(total)
            if delta:
                progress.residuals = {"delta_s": float(delta)}
        for number, total in _FREQ.findall(text):
            progress.message, found = f"frequency point {number} of {total}", True
        if (m := _CONVERGED.search(text)):
            progress.converged, progress.message, found = True, m.group(0).strip(), True
        if (m := _DONE.search(text)):
            progress.message, found = m.group(0).strip(), True
        found = note_error(progress, _ERROR, text) or found
        return progress if found else None

    def judge_exit(self, exit_code: int, log_tail: str) -> Outcome:
        if failed := failed_on(_ERROR, log_tail, exit_code):
            return failed
        if exit_code != 0:
            return Outcome(False, f"exit code {exit_code}")
        if (m := _STOPPED.search(log_tail)):
            return Outcome(True, m.group(0).replace("[info] e2e: ", "").strip())
        if (m := _MARKER.search(log_tail)):
            return Outcome(True, f"{m.group(1)} written")
        if not _DONE.search(log_tail):
            # batchsolve has been seen to exit 0 without solving: the marker or the completion line is the proof
            return Outcome(False, "ansysedt exited without its .q.completed marker or 'Normal completion'")
        return Outcome(True, "Normal completion of simulation")

    def request_stop(self, files: RunFiles) -> bool:
        # No stop file in plain batch mode: run.sh ends the solve once the current pass is solved; the solved
        # data stays in <project>.aedtresults, which a restart's -batchsolve picks up.
        return touch(files, STOP_FILE)

    def latest_checkpoint(self, run_dir: Path) -> str | None:
        for results in sorted(run_dir.glob("*.aedtresults")):
            if any(results.iterdir()):
                return f"solved data in {results.name} (the next -batchsolve continues from it)"
        return None


VIEWER_DIR = "aedt-view"   # under the desktop's apps folder: the project's copy the GUI opens
VIEWER_SCRIPT = (TEMPLATES_ROOT / "electronics" / "aedt_view.py").read_text()


def aedt_viewer(options: ElectronicsOptions, ctx: DesktopContext) -> DesktopApp | None:
    """`ansysedt -RunScript <apps>/aedt_view.py` in the run's copy, once the project is there; None when the
    run's copy is unknown (the script must name it: AEDT's own working directory is not promised)."""
    if ctx.run_copy is None:
        return None
    project = safe_name(options.project.name)
    script = (f"RUN_COPY = {str(ctx.run_copy)!r}\nPROJECT = {project!r}\n"
              f"SNAPSHOT_DIR = {str(ctx.apps_dir / VIEWER_DIR)!r}\n" + VIEWER_SCRIPT)
    return DesktopApp("AEDT project (read-only copy)",
                      (options.executable, "-RunScript", str(ctx.apps_dir / "aedt_view.py")),
                      cwd=ctx.run_id, wait_for=project, files={"aedt_view.py": script})
