"""OpenFOAM plugin: copies the case, applies controlDict parameters, decomposes, runs mpirun, reconstructs."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import zlib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, PlainValidator, ValidationInfo, field_validator

from orchestrator.model.errors import SpecError
from orchestrator.model.spec import check_input_dir, resolve_input_path

from .base import (
    DesktopApp,
    DesktopContext,
    LaunchContext,
    Outcome,
    Prepared,
    Progress,
    RunFiles,
    RunMode,
    SolverOptions,
    SolverPlugin,
    copy_if_absent,
    terminal_and_files,
)
from .openfoam_steps import MAX_STEPS, STEP_FAILED, Step, check_steps, derived_steps, step_logs, template_steps
from .series import parse_foam_table

WORD = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
PARAVIEW_SCRIPT = Path(__file__).resolve().parent.parent / "templates" / "openfoam" / "paraview_case.py"
PARAVIEW_SETTINGS = "paraview-config/ParaView/ParaView5.11.0.ini"  # Qt settings, read before the script runs
FOAM_DIR = "/usr/share/openfoam"   # Debian's package; WM_PROJECT_DIR is all its binaries need
_TIME = re.compile(r"^Time = (\S+)", re.M)
_RESIDUAL = re.compile(r"Solving for (\w+), Initial residual = ([-+0-9.eE]+)")
_EXEC = re.compile(r"^ExecutionTime = ([0-9.eE+-]+) s", re.M)
_CONVERGED = re.compile(r"^(.*solution converged in .*)$", re.M)
_FATAL = re.compile(r"FOAM FATAL (?:IO )?ERROR:?\s*\n?(.*)")


def _case_dir(path: Path, info) -> Path:
    path = check_input_dir(path, info)
    if (info.context or {}).get("check_paths", True) and not (path / "system" / "controlDict").is_file():
        raise ValueError(f"{str(path)!r} is not an OpenFOAM case: system/controlDict is missing")
    return path


_PARAM_WORD = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")


def _param_value(value: Any) -> int | float | str:
    """A controlDict value: a number or one FOAM word (nothing that could end or open an entry)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _PARAM_WORD.match(value):
        return value
    raise ValueError(f"{value!r} is not a controlDict value: use a number or one word of letters, digits, . _ + -")


ParamValue = Annotated[int | float | str, PlainValidator(_param_value)]


class OpenFOAMOptions(SolverOptions):
    """`solver:` block for OpenFOAM."""

    name: Literal["openfoam"]
    application: str = Field(pattern=WORD, description="the solver binary, e.g. simpleFoam, icoFoam")
    case: Annotated[Path, BeforeValidator(resolve_input_path), AfterValidator(_case_dir)]
    parameters: dict[str, ParamValue] = Field(default_factory=dict,
                                              description="controlDict entries to set, e.g. endTime: 300")
    mesh: Literal["auto", "blockMesh", "none"] = "auto"
    reconstruct: bool = True
    mpi_args: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.,:=/+-]{1,128}$")]] = Field(default_factory=list)
    steps: list[Step] | None = Field(None, max_length=MAX_STEPS, validate_default=True, description=(
        "pre-processing before the solver, in order (never rerun by a restart); when not given, derived at "
        "submit from the case's Allrun (or Allrun.pre); [] for none"))

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[Step] | None, info: ValidationInfo) -> list[Step] | None:
        case, application = info.data.get("case"), info.data.get("application")
        if case is None or application is None:
            return value  # their own errors are reported
        if value is None and (info.context or {}).get("check_paths", True):
            try:
                control = read_entry((Path(case) / "system" / "controlDict").read_text(errors="replace"),
                                     "application")
            except OSError as exc:
                raise ValueError(f"system/controlDict of the case cannot be read: {exc.strerror or exc}") from None
            value = derived_steps(Path(case), application, control)
        if value:
            check_steps(value, application)
        return value

    @field_validator("parameters")
    @classmethod
    def _keys_are_words(cls, value: dict) -> dict:
        bad = [k for k in value if not re.match(WORD, k)]
        if bad:
            raise ValueError(f"not controlDict keywords: {', '.join(map(repr, bad))}")
        return value


class OpenFOAM(SolverPlugin):
    name = "openfoam"
    Options = OpenFOAMOptions
    summary = "OpenFOAM (Debian build): blockMesh, decomposePar, mpirun <application> -parallel, reconstructPar"
    live_fields = ("parameters",)  # controlDict entries: re-read by a running solver (runTimeModifiable)

    def prepare(self, options: OpenFOAMOptions, ctx: LaunchContext) -> Prepared:
        restart = ctx.mode is RunMode.RESTART
        if not restart:
            copy_case(options.case, ctx.run_dir)
        control = ctx.run_dir / "system" / "controlDict"
        text = control.read_text()
        # A restart continues from the newest time written (in processor*/ when decomposed); stopAt goes
        # back to endTime, or a leftover writeNow from the pause would stop the new attempt after one step.
        settings = {**{k: str(v) for k, v in options.parameters.items()}, "stopAt": "endTime"}
        if restart:
            settings.update(_restart_from(ctx.run_dir))
        for key, value in settings.items():
            text = set_entry(text, key, value)
        if "OptimisationSwitches" not in text:
            # Edits made within 10 s of each other are otherwise dropped (fileModificationSkew);
            # the signals give pause/stop a route that needs no file edit.
            text += ("\nOptimisationSwitches\n{\n    fileModificationSkew 0;\n"
                     "    writeNowSignal 10;\n    stopAtWriteNowSignal 12;\n}\n")
        control.write_text(text)
        nprocs = ctx.nprocs
        decompose = nprocs > 1 and not (restart and (ctx.run_dir / "processor0").is_dir())
        if decompose:
            (ctx.run_dir / "system" / "decomposeParDict").write_text(decompose_dict(nprocs))
        steps = list(options.steps or [])
        # `auto` meshes only when no step runs blockMesh itself (an Allrun's own `runApplication blockMesh`)
        needs_mesh = not restart and (options.mesh == "blockMesh" or (
            options.mesh == "auto" and not any(s.run == "blockMesh" for s in steps)
            and not (ctx.run_dir / "constant" / "polyMesh" / "points").exists()
            and (ctx.run_dir / "system" / "blockMeshDict").exists()))
        # A restart continues the solver: pre-processing ran in the first attempt and is never rerun.
        serial, parallel = template_steps([] if restart else steps, parallel_ok=nprocs > 1)
        flags = list(options.mpi_args)
        if ctx.as_root:
            flags.insert(0, "--allow-run-as-root")
        if all(n.address in ("localhost", "127.0.0.1") for n in ctx.nodes) and nprocs >= (os.cpu_count() or 1):
            flags += ["--mca", "mpi_yield_when_idle", "1"]  # busy-polling ranks starve each other otherwise
        end = read_entry(text, "endTime")
        log_file = f"log.{options.application}"
        return Prepared(
            template="openfoam/run.sh.j2",
            context={"application": options.application, "nprocs": nprocs, "hostfile": ctx.hostfile,
                     "mesh": needs_mesh, "decompose": decompose, "reconstruct": options.reconstruct,
                     "mpi_flags": flags, "log_file": log_file, "append_log": restart, "restart": restart,
                     "serial_steps": serial, "parallel_steps": parallel},
            log_file=log_file,
            step_logs=step_logs(steps),
            progress_total=_float(end),
            env={"WM_PROJECT_DIR": os.environ.get("WM_PROJECT_DIR", FOAM_DIR)},
            info={"steps": _describe(steps)} if steps else {},
        )

    def desktop_apps(self, options: OpenFOAMOptions, ctx: DesktopContext) -> list[DesktopApp]:
        """ParaView on the run's live copy (its built-in reader on an empty <case>.foam), then the defaults. It
        starts once the mesh is in the run's copy (a reader opened on no mesh only shows errors); its script
        moves into that copy and opens the case once the mesh's files are all there."""
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", options.case.name).strip(".") or "case"
        script = f"FOAM_FILE = {name + '.foam'!r}\nRUN_FOLDER = {ctx.run_id!r}\n" + PARAVIEW_SCRIPT.read_text()
        # Its own settings folder: the modal welcome dialog would otherwise hold the script back until closed
        settings = "[General]\nGeneralSettings.ShowWelcomeDialog=false\n"
        paraview = DesktopApp("ParaView", ("paraview", "-geometry", ctx.geometry,  # Qt's X11 option: beside the panel
                                           f"--script={ctx.apps_dir / 'paraview_case.py'}"),
                              # in the work folder, once the mesh reached the run's copy: started later than the
                              # terminal, ParaView's window maps last and keeps the focus
                              cwd=".", wait_for=f"{ctx.run_id}/constant/polyMesh",
                              files={"paraview_case.py": script, PARAVIEW_SETTINGS: settings},
                              env={"XDG_CONFIG_HOME": str(ctx.apps_dir / "paraview-config")})
        return [paraview, *terminal_and_files(ctx.run_id)]

    def series_files(self) -> tuple[str, ...]:
        return ("postProcessing/*/*/*",)  # function objects: <name>/<startTime>/<file>

    def parse_series(self, path: str, text: str, state: dict[str, Any]) -> dict[str, list[list[float]]]:
        return parse_foam_table(path, text, state)

    def parse_progress(self, text: str, last: Progress | None) -> Progress | None:
        found = False
        progress = (last or Progress()).model_copy(deep=True)
        # Walk time steps in order, so residuals belong to the last step seen.
        chunks = _TIME.split(text)
        found = _fold(progress, chunks[0])  # the tail of a step begun in the previous chunk
        for i in range(1, len(chunks), 2):
            found = True
            progress.step = _float(chunks[i])
            progress.residuals = {}
            _fold(progress, chunks[i + 1])
        if (m := _CONVERGED.search(text)):
            progress.converged, progress.message, found = True, m.group(1).strip(), True
        if (m := _FATAL.search(text)):
            progress.message, found = f"FOAM FATAL ERROR: {m.group(1).strip()}", True
        return progress if found else None

    def judge_exit(self, exit_code: int, log_tail: str) -> Outcome:
        if exit_code != 0 and (m := STEP_FAILED.search(log_tail)):  # written there by run.sh, before the solver
            return Outcome(False, f"{m.group(1)} (exit code {exit_code})")
        if (m := _FATAL.search(log_tail)):
            return Outcome(False, f"FOAM FATAL ERROR: {m.group(1).strip()} (exit code {exit_code})")
        if exit_code != 0:
            return Outcome(False, f"exit code {exit_code}")
        if not re.search(r"^End\s*$", log_tail, re.M):
            return Outcome(False, "the solver exited without printing 'End'")
        return Outcome(True, "End")

    def request_stop(self, files: RunFiles) -> bool:
        # stopAt writeNow: write the current time step, then exit cleanly (read by the master rank).
        text = files.read_text("system/controlDict")
        files.write_text("system/controlDict", set_entry(text, "stopAt", "writeNow"))
        return True

    def latest_checkpoint(self, run_dir: Path) -> str | None:
        latest = restart_time(run_dir)
        if latest is None or not _float(latest) or not (run_dir / "system" / "controlDict").is_file():
            return None
        return f"time {_float(latest):g}"

    def apply_live(self, old: OpenFOAMOptions, new: OpenFOAMOptions, files: RunFiles) -> list[str]:
        # Only controlDict entries are re-read by a running solver; everything else needs a restart.
        fixed = [f for f in ("application", "case", "mesh", "reconstruct", "mpi_args", "steps")
                 if getattr(old, f) != getattr(new, f)]
        if fixed:
            raise SpecError([(f"solver.{f}", "cannot change while the solver runs; pause, edit, then restart")
                             for f in fixed])
        text = files.read_text("system/controlDict")
        if (read_entry(text, "runTimeModifiable") or "true").strip() not in ("true", "yes", "on", "1"):
            raise SpecError([("solver.parameters", "the case sets runTimeModifiable false, so the solver "
                                                   "never re-reads controlDict; pause, edit, then restart")])
        changed = {k: str(v) for k, v in new.parameters.items() if old.parameters.get(k) != v}
        if not changed:
            return []
        merged = text
        for key, value in changed.items():
            merged = set_entry(merged, key, value)
        if "endTime" in changed:
            _check_end_is_written(merged)
        files.write_text("system/controlDict", merged)
        return [f"parameters.{k}" for k in changed]


def _describe(steps: list[Step]) -> str:
    """The steps in one line, as `e2e render` and the run record show them."""
    logs = list(step_logs(steps).values())
    return "; ".join(" ".join([s.run, *s.args]) + (" [parallel]" if s.parallel else "") + f" > {log}"
                     for s, log in zip(steps, logs, strict=True))


def _times(folder: Path) -> dict[float, str]:
    """The time directories of a case or processor folder: value -> directory name."""
    if not folder.is_dir():
        return {}
    return {t: p.name for p in folder.iterdir() if p.is_dir() and (t := _float(p.name)) is not None}


def restart_time(run_dir: Path) -> str | None:
    """The newest time every processor directory holds (the case's own newest when not decomposed). They
    differ when a rank's node was lost before its output was gathered: its processor lacks the newer times."""
    processors = [p for p in run_dir.glob("processor*") if p.name[len("processor"):].isdigit()]
    found = [_times(folder) for folder in processors or [run_dir]]
    common = set.intersection(*(set(t) for t in found)) if found else set()
    return found[0][max(common)] if common else None


def _restart_from(run_dir: Path) -> dict[str, str]:
    """controlDict entries for a restart: the latest time, or the newest one every processor has."""
    common = restart_time(run_dir)
    newest = max(_times(run_dir / "processor0") or _times(run_dir) or {0.0: ""})
    if common is not None and _float(common) < newest:
        return {"startFrom": "startTime", "startTime": common}
    return {"startFrom": "latestTime"}


def _fold(progress: Progress, text: str) -> bool:
    found = False
    for field, value in _RESIDUAL.findall(text):
        progress.residuals.setdefault(field, float(value))  # the first solve of a field in a step
        found = True
    for value in _EXEC.findall(text):
        progress.solver_time = float(value)
        found = True
    return found


def _check_end_is_written(text: str) -> None:
    """A live endTime the solver would stop at without writing it (not on the write interval) loses the
    final fields: refuse it, naming a value that works."""
    end, interval = _float(read_entry(text, "endTime")), _float(read_entry(text, "writeInterval"))
    start, dt = _float(read_entry(text, "startTime")) or 0.0, _float(read_entry(text, "deltaT"))
    control = read_entry(text, "writeControl") or "timeStep"
    if end is None or not interval:
        return
    step = interval * (dt or 1.0) if control == "timeStep" else interval
    if control not in ("timeStep", "runTime", "adjustableRunTime") or step <= 0:
        return
    ratio = (end - start) / step
    if abs(ratio - round(ratio)) > 1e-9:
        aligned = start + max(1, round(ratio)) * step
        raise SpecError([("solver.parameters.endTime",
                          f"{end:g} is not on the write interval ({step:g}), so the solver would stop there "
                          f"without writing the final fields; use e.g. {aligned:g}")])


# Gzipped case files unpack to at most this many bytes per case, all files together: a tutorial's fields are
# a few MiB, and a gzip bomb (1000:1 for zeros) must fail the run with a clear error, not fill the node's disk.
GUNZIP_LIMIT = 2 << 30
_CHUNK = 1 << 20


def copy_case(src: Path, dest: Path) -> None:
    """Copy the case (not earlier results or decompositions) and unpack gzipped tutorial files (at most
    GUNZIP_LIMIT bytes unpacked per case; past it the run fails naming the file)."""
    ignore = shutil.ignore_patterns("processor*", "log.*", ".e2e")
    shutil.copytree(src, dest, dirs_exist_ok=True, ignore=ignore, symlinks=False, copy_function=copy_if_absent)
    unpacked = 0
    for packed in sorted(dest.rglob("*.gz")):
        target = packed.with_suffix("")
        if not target.exists():
            unpacked = _gunzip(packed, target, unpacked, dest)
        packed.unlink()


def _gunzip(packed: Path, target: Path, unpacked: int, case: Path) -> int:
    """Unpack one file, counting its bytes into the case's total as they come; over GUNZIP_LIMIT the partial
    file is removed and the error names the file."""
    try:
        with gzip.open(packed, "rb") as fin, open(target, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                unpacked += len(chunk)
                if unpacked > GUNZIP_LIMIT:
                    raise _TooBig()
                fout.write(chunk)
    except _TooBig:
        target.unlink(missing_ok=True)
        raise SpecError([("solver.case", f"{packed.relative_to(case)} unpacks past the {_size(GUNZIP_LIMIT)} "
                                         "allowed for a case's gzipped files together; unpack it yourself or "
                                         "send a smaller case")]) from None
    except (OSError, EOFError, zlib.error) as exc:  # not gzip, truncated, corrupt
        target.unlink(missing_ok=True)
        raise SpecError([("solver.case", f"{packed.relative_to(case)} is not a readable gzip file: {exc}")]) from None
    return unpacked


class _TooBig(Exception):
    pass


def _size(limit: int) -> str:
    return f"{limit / (1 << 30):g} GiB" if limit >= 1 << 30 else f"{limit / (1 << 20):g} MiB" if limit >= 1 << 20 \
        else f"{limit} bytes"


def set_entry(text: str, key: str, value: str) -> str:
    """Set a top-level `key value;` entry of a FOAM dictionary, appending it when absent."""
    pattern = re.compile(rf"^{re.escape(key)}\s+[^;]*;", re.M)
    if pattern.search(text):
        return pattern.sub(lambda _m: f"{key} {value};", text, count=1)
    return text.rstrip("\n") + f"\n{key} {value};\n"


def read_entry(text: str, key: str) -> str | None:
    m = re.search(rf"^{re.escape(key)}\s+([^;]*);", text, re.M)
    return m.group(1).strip() if m else None


def decompose_dict(nprocs: int) -> str:
    # Debian's scotch decomposition is a stub, so split along x ("simple"): valid for any mesh.
    return ("FoamFile { version 2.0; format ascii; class dictionary; object decomposeParDict; }\n"
            f"numberOfSubdomains {nprocs};\nmethod simple;\n"
            f"coeffs {{ n ({nprocs} 1 1); delta 0.001; }}\nsimpleCoeffs {{ n ({nprocs} 1 1); delta 0.001; }}\n")


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
