"""Representative specs of the vendor plugins (1 and 3 nodes, several versions and modes), shared by the golden,
script-checking and hostile-rendering tests."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from solvers.base import RunMode, registry
from solvers.contract import launch_context, prepare_and_render

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
EMULATORS = Path(__file__).resolve().parents[1] / "emulators"


def run_emulated(run_dir: Path, wait: bool = True, **env: str) -> subprocess.Popen | subprocess.CompletedProcess:
    """Run a rendered run.sh with the emulators first on PATH (fast pacing unless told otherwise)."""
    full = {**os.environ, "PATH": f"{EMULATORS}:{os.environ['PATH']}", "E2E_EMULATOR_DELAY": "0.01",
            "E2E_RUN_TAG": "job0001/run-001", **env}
    argv = ["bash", "run.sh"]
    if wait:
        return subprocess.run(argv, cwd=run_dir, env=full, capture_output=True, text=True, timeout=60)
    # its own session, like the engine's wrapper: the whole tree can be signalled as one group
    return subprocess.Popen(argv, cwd=run_dir, env=full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _fluent_autosave(run_dir: Path) -> None:
    (run_dir / "autosave").mkdir(parents=True, exist_ok=True)
    for it in (100, 150):
        (run_dir / "autosave" / f"run-{it:05d}.dat.h5").write_text(f"iteration {it}\n")


def _mapdl_restart_files(run_dir: Path) -> None:
    (run_dir / "beam.dat").write_text((DATA / "beam.dat").read_text())
    for name in ("beam.rdb", "beam.ldhi", "beam.r001"):
        (run_dir / name).write_text("{}")


def _star_saved(run_dir: Path) -> None:
    for it in (40, 120):
        (run_dir / f"pipe@{it:05d}.sim").write_text(f"max_steps = 150\niteration = {it}\n")


def _ccx_first_step_done(run_dir: Path) -> None:
    (run_dir / "job.inp").write_text((DATA / "cantilever.inp").read_text())
    (run_dir / "job.rout").write_bytes(b"restart record")
    (run_dir / "job.sta").write_text("SUMMARY OF JOB INFORMATION\n  STEP      INC     ATT  ITRS     TOT TIME     "
                                     "STEP TIME      INC TIME\n"
                                     "     1         50     1     2  0.100000E+01  0.100000E+01  0.200000E-01\n"
                                     "     2          3     1     2  0.106000E+01  0.600000E-01  0.200000E-01\n")


@dataclass
class Case:
    id: str
    solver: str
    options: dict[str, Any]
    nodes: int
    files: tuple[str, ...]             # what the plugin generates (compared with the golden copies)
    mode: RunMode = RunMode.FRESH
    attempt: int = 1
    before: Callable[[Path], None] | None = None  # what an earlier attempt left in the run directory
    site_env: dict[str, str] = field(default_factory=dict)

    def render(self, run_dir: Path):
        """(prepared, script) exactly as the engine makes them."""
        if self.before:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.before(run_dir)
        plugin = registry().get(self.solver)
        options = plugin.Options.model_validate({"name": self.solver, **self.options})
        ctx = launch_context(run_dir, self.nodes, self.mode, self.attempt, cores=4, site_env=self.site_env)
        return prepare_and_render(plugin, options, ctx)


CASES = [
    Case("fluent-steady-1node", "fluent", {"case": str(DATA / "elbow.cas.h5"), "iterations": 300}, 1,
         ("run.sh", "run-1.jou", "fluent.hosts")),
    Case("fluent-transient-openmpi-3nodes", "fluent",
         {"case": str(DATA / "elbow.cas.h5"), "dimension": "2ddp", "time_steps": 200, "max_iterations_per_step": 15,
          "mpi": "openmpi", "extra_args": ["-pib.infinipath"], "license_file": "1055@lic1"}, 3,
         ("run.sh", "run-1.jou", "fluent.hosts")),
    Case("fluent-restart-3nodes", "fluent", {"case": str(DATA / "elbow.cas.h5"), "iterations": 300}, 3,
         ("run.sh", "run-2.jou", "fluent.hosts"), RunMode.RESTART, 2, _fluent_autosave),
    Case("mechanical-241-1node", "mechanical", {"input": str(DATA / "beam.dat"), "jobname": "beam"}, 1, ("run.sh",)),
    Case("mechanical-232-hybrid-3nodes", "mechanical",
         {"input": str(DATA / "beam.dat"), "jobname": "beam", "version": "232", "product": "ansys",
          "mpi": "openmpi", "threads_per_process": 2, "memory_mb": 4096}, 3, ("run.sh",)),
    Case("mechanical-251-restart-3nodes", "mechanical",
         {"input": str(DATA / "beam.dat"), "jobname": "beam", "version": "251",
          "restart_commands": "TIME,2\nNSUBST,20"}, 3, ("run.sh", "restart-2.inp"), RunMode.RESTART, 2,
         _mapdl_restart_files),
    Case("electronics-all-setups-1node", "electronics", {"project": str(DATA / "patch.aedt")}, 1, ("run.sh",)),
    Case("electronics-setup-gpu-3nodes", "electronics",
         {"project": str(DATA / "patch.aedt"), "design": "HFSSDesign1", "setup": "Setup1", "tasks_per_node": 2,
          "gpus_per_node": 1, "hpc_license": "pack", "executable": "/opt/AnsysEM/v241/Linux64/ansysedt"}, 3,
         ("run.sh",)),
    Case("starccm-run-1node", "starccm", {"sim": str(DATA / "pipe.sim")}, 1, ("run.sh", "machinefile")),
    Case("starccm-power-server-3nodes", "starccm",
         {"sim": str(DATA / "pipe.sim"), "max_steps": 500, "power": True, "podkey": "not-in-golden",
          "server_port": 47827}, 3, ("run.sh", "machinefile", "e2e_run.java")),
    Case("starccm-restart-3nodes", "starccm", {"sim": str(DATA / "pipe.sim"), "mpi": "intel"}, 3,
         ("run.sh", "machinefile"), RunMode.RESTART, 2, _star_saved),
    Case("calculix-1node", "calculix", {"input": str(DATA / "cantilever.inp")}, 1, ("run.sh",)),
    Case("calculix-restart-3nodes", "calculix", {"input": str(DATA / "cantilever.inp"), "threads": 3}, 3,
         ("run.sh", "job_r2.inp"), RunMode.RESTART, 2, _ccx_first_step_done),
]


def describe(prepared) -> str:
    """The parts of Prepared that are not files, for the golden folder (env values hidden: licence secrets)."""
    return json.dumps({"log_file": prepared.log_file, "progress_total": prepared.progress_total,
                       "env": sorted(prepared.env), "info": prepared.info}, indent=2, sort_keys=True) + "\n"
