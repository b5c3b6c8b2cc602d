"""Bad input, part 2: shell metacharacters in every string field of every solver's spec, executed end to end.

Each payload tries to create a marker file. It goes into one string field (list item, map key or value, a
file name for path fields, a secret) of a working spec; the spec goes through validate_spec, then
materialize_run writes the run directory exactly as a launch does (the plugin's prepare, run.sh from
templates/<solver>/, wrapper.sh from templates/common/), and the wrapper is EXECUTED with the vendor
emulators (tests/emulators) and stubs for OpenFOAM, mpirun and ccx on PATH. Refusals by the spec are safe
rejections; the suite counts executions of a payload (must be 0). E2E_LONG=1 adds restart-mode launches.
"""

from __future__ import annotations

import json
import os
import subprocess
import typing
from pathlib import Path

import pytest

from orchestrator.cluster.base import Node
from orchestrator.engine.materialize import materialize_run
from orchestrator.model.errors import SpecError, UserError
from orchestrator.model.paths import JobPaths
from orchestrator.model.spec import validate_spec
from solvers.base import RunMode, registry
from tests.faults.test_badinput_specs import inputs  # noqa: F401 (the working spec of each solver)
from tests.resilience import record
from tests.unit.test_rendering import PAYLOADS, REAL_PATH, hostile

LONG = os.environ.get("E2E_LONG") == "1"
ROOT = Path(__file__).resolve().parents[2]
EMULATORS = ROOT / "tests" / "emulators"
STUBS = ["blockMesh", "decomposePar", "mpirun", "reconstructPar", "simpleFoam", "ccx"]
MARK = "PWNED"
# beyond test_rendering's list: option injection, redirections, a glob, a quote that closes early
EXTRA = ["-rf", "--output=MARK", "> MARK", "|| touch MARK", "'$(touch MARK)'", "\ntouch MARK\n", "$(touch${IFS}MARK)",
         "a;touch MARK;#", "-c touch MARK", "x' 'touch' 'MARK"]
ALL_PAYLOADS = PAYLOADS + EXTRA
SUFFIX = {"case": ".cas.h5", "data": ".dat.h5", "journal": ".jou", "input": ".inp", "project": ".aedt", "sim": ".sim",
          "macro": ".java", "include_files": ".inp", "inputs": ".dat"}
MODES = [RunMode.FRESH, RunMode.RESTART] if LONG else [RunMode.FRESH]


def _is_text(annotation) -> bool:
    text = repr(annotation)
    return any(t in text for t in ("str", "Path", "SecretStr"))


def placements(solver: str, base: dict) -> list[tuple[str, typing.Callable[[str, Path], dict]]]:
    """(label, make(value, where) -> spec) for every place a string goes in this solver's spec."""
    options = registry().get(solver).Options
    found = []

    def put(path: list, shape, label: str = ""):
        def make(value: str, where: Path) -> dict:
            spec = json.loads(json.dumps(base))
            node = spec
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = shape(value, where)
            return spec
        found.append((".".join(map(str, path)) + label, make))

    for name, field in options.model_fields.items():
        ann = field.annotation
        if name == "name" or not _is_text(ann):
            continue
        origin = typing.get_origin(ann)
        if "Path" in repr(ann):
            def as_file(value, where, name=name, many=origin is list):
                path = where / "inputs" / (value.replace("/", "_").replace("\x00", "_")[:60] + SUFFIX.get(name, ".dat"))
                path.parent.mkdir(parents=True, exist_ok=True)
                if name == "case" and solver == "openfoam":
                    (path / "system").mkdir(parents=True, exist_ok=True)
                    (path / "system" / "controlDict").write_text("endTime 1;\n")
                else:  # the working input's content, so prepare gets as far as with the real file
                    same = base["solver"].get(name)
                    same = same[0] if isinstance(same, list) and same else same
                    path.write_bytes(Path(same).read_bytes() if isinstance(same, str) else b"iteration = 0\n")
                return [str(path)] if many else str(path)
            put(["solver", name], as_file)
        elif origin is list:
            put(["solver", name], lambda v, w: [v], "[0]")
            put(["solver", name], lambda v, w, n=name: [*base["solver"].get(n, ["echo"]), v], "[+]")
        elif origin is dict:
            put(["solver", name], lambda v, w: {"K": v}, "[value]")
            put(["solver", name], lambda v, w: {v: "1"}, "[key]")
        else:
            put(["solver", name], lambda v, w: v)
    # the job's own strings (they reach events and the run's record, and must be refused or inert too)
    for path in (["name"], ["description"], ["desktop", "geometry"]):
        put(path, lambda v, w: v)
    put(["desktop", "access"], lambda v, w: [v])
    return found


@pytest.fixture(scope="module")
def stub_bin(tmp_path_factory) -> Path:
    """OpenFOAM, mpirun and ccx stand-ins: exit 0 after leaving their argv in the run directory."""
    folder = tmp_path_factory.mktemp("shell-stubs")
    for name in STUBS:
        stub = folder / name
        stub.write_text('#!/bin/bash\nprintf "%s\\0" "$@" > "./.called-${0##*/}"\nexit 0\n')
        stub.chmod(0o755)
    return folder


def _launch(spec, solver: str, case_dir: Path, mode: RunMode, env: dict[str, str]) -> subprocess.Popen | str:
    """Write the run directory as a launch does and start its wrapper; or why nothing was started."""
    paths = JobPaths.for_job(case_dir / "home", "job0001").run("run-001", 1 if mode is RunMode.FRESH else 2)
    node = Node("node1", "localhost", 2, case_dir / "node")
    try:
        materialize_run(spec, registry().get(solver), "job0001", "run-001", [node], paths, mode=mode,
                        site_env={"ANSYSLMD_LICENSE_FILE": "1055@site"})
    except (UserError, OSError) as exc:  # as lifecycle takes them: the run fails before anything runs
        return getattr(exc, "message", None) or str(exc)
    return subprocess.Popen(["bash", str(paths.wrapper)], cwd=paths.root, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)


def test_metacharacters_in_every_string_field_never_execute(inputs, stub_bin, tmp_path):  # noqa: F811
    env = {"PATH": f"{stub_bin}:{EMULATORS}:{REAL_PATH}", "HOME": str(tmp_path / "home"), "LC_ALL": "C",
           "E2E_EMULATOR_DELAY": "0"}
    counts = {"cases": 0, "refused_by_spec": 0, "refused_at_prepare": 0, "executed_inert": 0, "payload_executions": 0}
    executed: list[str] = []
    broken: list[str] = []
    prepare_refusals: set[str] = set()
    fields_per_solver = {}
    batch: list[tuple[str, Path, Path, subprocess.Popen]] = []

    def drain():
        for label, marker, home, proc in batch:
            proc.wait(timeout=120)
            if not list(home.glob("jobs/*/runs/*/.e2e/attempt-*/exit_code")):
                broken.append(label)  # a value that broke the wrapper itself (it never recorded an exit code)
            if marker.exists():
                executed.append(label)
        batch.clear()

    solvers = sorted(inputs)
    assert set(solvers) == set(registry().names()), "a solver plugin has no working spec here"
    n = 0
    for solver in solvers:
        base = {"name": "shell-job", "solver": inputs[solver], "cluster": {"nodes": 1, "cores_per_node": 2},
                "desktop": {"enabled": False}}
        places = placements(solver, base)
        fields_per_solver[solver] = len(places)
        for label, make in places:
            for p, payload in enumerate(ALL_PAYLOADS):
                n += 1
                case_dir = tmp_path / f"c{n}"
                case_dir.mkdir()
                marker = case_dir / MARK
                value = hostile(payload, marker)
                for mode in MODES:  # a restart relaunches the same run directory, once the first launch ended
                    if batch and batch[-1][2] == case_dir / "home":
                        batch[-1][3].wait(timeout=120)
                    what = f"{solver} {label} payload {p} {mode.value}: {value!r}"
                    counts["cases"] += 1
                    try:
                        spec = validate_spec(make(value, case_dir))
                    except SpecError:
                        counts["refused_by_spec"] += 1
                        continue
                    started = _launch(spec, solver, case_dir, mode, env)
                    if isinstance(started, str):
                        counts["refused_at_prepare"] += 1
                        prepare_refusals.add(f"{solver} {label}: {started.splitlines()[0][:120]}")
                        continue
                    counts["executed_inert"] += 1
                    batch.append((what, marker, case_dir / "home", started))
                    if len(batch) >= 16:
                        drain()
    drain()
    counts["payload_executions"] = len(executed)
    counts["executed_inert"] -= len(executed)
    record("bad input: shell metacharacters", counts["cases"], counts["cases"] - len(executed),
           f"{len(executed)} payload executions in {counts['cases']} cases ({counts['refused_by_spec']} refused by "
           f"the spec, {counts['refused_at_prepare']} at prepare, {counts['executed_inert']} ran inert)",
           wrappers_broken=len(broken), prepare_refusals=sorted(prepare_refusals), solvers=len(solvers),
           fields=fields_per_solver, payloads=len(ALL_PAYLOADS),
           **{k: v for k, v in counts.items() if k != "cases"})
    assert not executed, "payloads executed:\n" + "\n".join(executed)
    assert not broken, "values that broke the wrapper:\n" + "\n".join(broken)
    assert counts["executed_inert"] > len(solvers) * len(ALL_PAYLOADS), "too few cases ran: the suite proves little"


def test_a_working_spec_of_every_solver_really_runs_its_launcher(inputs, stub_bin, tmp_path):  # noqa: F811
    """The control: without payloads, every solver's wrapper runs run.sh and reaches its launcher (so a payload
    that did not run above did not run because it was inert, not because nothing ran)."""
    env = {"PATH": f"{stub_bin}:{EMULATORS}:{REAL_PATH}", "HOME": str(tmp_path / "home"), "LC_ALL": "C",
           "E2E_EMULATOR_DELAY": "0"}
    for solver in sorted(inputs):
        case_dir = tmp_path / solver
        spec = validate_spec({"name": "ok", "solver": inputs[solver], "desktop": {"enabled": False},
                              "cluster": {"nodes": 1, "cores_per_node": 2}})
        proc = _launch(spec, solver, case_dir, RunMode.FRESH, env)
        assert not isinstance(proc, str), proc
        proc.wait(timeout=120)
        run_dir = case_dir / "home" / "jobs" / "job0001" / "runs" / "run-001"
        reached = list(run_dir.glob(".called-*")) or [
            p for p in run_dir.iterdir() if p.suffix in (".trn", ".out", ".log") and p.stat().st_size]
        assert reached, f"{solver}: the launcher never ran: {sorted(p.name for p in run_dir.iterdir())}"
