"""OpenFOAM plugin: log parsing, exit judgement, controlDict edits, prepare() on a real tutorial; command plugin."""

from __future__ import annotations

import dataclasses
import gzip
import shutil
from pathlib import Path

import pytest

from orchestrator.model.errors import SpecError
from solvers import openfoam as openfoam_module
from solvers.base import LaunchContext, NodeSlots, Progress, RunMode
from solvers.command import Command, CommandOptions
from solvers.openfoam import OpenFOAM, OpenFOAMOptions, read_entry, set_entry

TUTORIALS = Path("/usr/share/doc/openfoam-examples/examples/incompressible")
CAVITY = TUTORIALS / "icoFoam" / "cavity" / "cavity"
PITZ = TUTORIALS / "simpleFoam" / "pitzDaily"

needs_tutorials = pytest.mark.skipif(not (CAVITY / "system").is_dir() or not (PITZ / "system").is_dir(),
                                     reason="OpenFOAM tutorials (openfoam-examples) are not installed")

# Two steps of a simpleFoam log, as OpenFOAM v1912 prints them (k-epsilon, GAMG for p).
SIMPLEFOAM_LOG = """\
SIMPLE: convergence criteria
    field p	 tolerance 0.01
    field U	 tolerance 0.001

Starting time loop

Time = 11

smoothSolver:  Solving for Ux, Initial residual = 0.05, Final residual = 0.001, No Iterations 4
smoothSolver:  Solving for Uy, Initial residual = 0.06, Final residual = 0.002, No Iterations 4
GAMG:  Solving for p, Initial residual = 0.3, Final residual = 0.01, No Iterations 7
time step continuity errors : sum local = 1e-05, global = 2e-06, cumulative = 3e-06
smoothSolver:  Solving for epsilon, Initial residual = 0.004, Final residual = 0.0001, No Iterations 3
smoothSolver:  Solving for k, Initial residual = 0.007, Final residual = 0.0002, No Iterations 3
ExecutionTime = 1.25 s  ClockTime = 2 s

Time = 12

smoothSolver:  Solving for Ux, Initial residual = 0.0123, Final residual = 0.0001, No Iterations 3
smoothSolver:  Solving for Uy, Initial residual = 0.0456, Final residual = 0.0002, No Iterations 3
GAMG:  Solving for p, Initial residual = 0.2, Final residual = 0.001, No Iterations 5
GAMG:  Solving for p, Initial residual = 0.09, Final residual = 0.0005, No Iterations 2
time step continuity errors : sum local = 9e-06, global = 1e-06, cumulative = 4e-06
smoothSolver:  Solving for epsilon, Initial residual = 3.5e-03, Final residual = 1e-05, No Iterations 2
smoothSolver:  Solving for k, Initial residual = 6.25e-3, Final residual = 2e-05, No Iterations 2
ExecutionTime = 1.5 s  ClockTime = 2 s

"""
LAST_STEP_RESIDUALS = {"Ux": 0.0123, "Uy": 0.0456, "p": 0.2, "epsilon": 3.5e-3, "k": 6.25e-3}


@pytest.fixture
def plugin() -> OpenFOAM:
    return OpenFOAM()


# -- parse_progress

def test_parse_progress_reads_step_residuals_and_time_of_the_last_step(plugin):
    progress = plugin.parse_progress(SIMPLEFOAM_LOG, None)

    assert progress is not None
    assert progress.step == 12
    # first solve of each field in the step (p is solved twice: 0.2 then 0.09)
    assert progress.residuals == LAST_STEP_RESIDUALS
    assert progress.solver_time == 1.5
    assert progress.converged is False
    assert progress.message is None


def _split_points(text: str) -> list[int]:
    """Every line boundary of the log: where the engine may cut a chunk."""
    return [i + 1 for i, ch in enumerate(text) if ch == "\n"]


def test_chunks_split_anywhere_fold_to_the_same_progress(plugin):
    whole = plugin.parse_progress(SIMPLEFOAM_LOG, None)
    for cut in _split_points(SIMPLEFOAM_LOG)[:-1]:
        head, tail = SIMPLEFOAM_LOG[:cut], SIMPLEFOAM_LOG[cut:]
        first = plugin.parse_progress(head, None)
        folded = plugin.parse_progress(tail, first)
        # a tail with nothing new (only blank lines) leaves the earlier progress as it was
        result = folded if folded is not None else first
        assert result == whole, f"cut after {head.splitlines()[-1]!r}"


def test_a_step_split_mid_way_keeps_the_first_solve_per_field(plugin):
    # Given a chunk ending after the first p solve of step 12, and the rest of the log
    cut = SIMPLEFOAM_LOG.index("GAMG:  Solving for p, Initial residual = 0.09")
    first = plugin.parse_progress(SIMPLEFOAM_LOG[:cut], None)
    assert first.step == 12 and first.residuals["p"] == 0.2 and first.solver_time == 1.25

    # When the rest arrives
    second = plugin.parse_progress(SIMPLEFOAM_LOG[cut:], first)

    # Then the second p solve does not replace the first, and later fields are added
    assert second.residuals == LAST_STEP_RESIDUALS
    assert second.solver_time == 1.5
    # And the earlier progress object was not mutated
    assert "k" not in first.residuals


def test_a_new_step_resets_residuals(plugin):
    last = plugin.parse_progress(SIMPLEFOAM_LOG, None)
    nxt = plugin.parse_progress("Time = 13\n\nGAMG:  Solving for p, Initial residual = 0.15, "
                                "Final residual = 0.001, No Iterations 4\n", last)
    assert nxt.step == 13
    assert nxt.residuals == {"p": 0.15}
    assert nxt.solver_time == 1.5  # no new ExecutionTime line yet


def test_parse_progress_keeps_the_total_it_was_given(plugin):
    last = Progress(step=3, total=300)
    progress = plugin.parse_progress(SIMPLEFOAM_LOG, last)
    assert progress.total == 300
    assert progress.fraction == pytest.approx(12 / 300)


def test_nothing_new_returns_none(plugin):
    assert plugin.parse_progress("", None) is None
    assert plugin.parse_progress("Create mesh for time = 0\n\nReading field p\n\n", None) is None
    assert plugin.parse_progress("deltaT = 0.005\n", Progress(step=4)) is None


def test_transient_times_parse_as_floats(plugin):
    log = ("Courant Number mean: 0.22 max: 0.85\nTime = 0.035\n\n"
           "DILUPBiCGStab:  Solving for Ux, Initial residual = 1.2e-05, Final residual = 3e-09, No Iterations 2\n"
           "DICPCG:  Solving for p, Initial residual = 0.0004, Final residual = 2e-07, No Iterations 22\n"
           "ExecutionTime = 0.07 s  ClockTime = 0 s\n")
    progress = plugin.parse_progress(log, None)
    assert progress.step == 0.035
    assert progress.residuals == {"Ux": 1.2e-05, "p": 0.0004}
    assert progress.solver_time == 0.07


def test_convergence_line_sets_converged(plugin):
    last = plugin.parse_progress(SIMPLEFOAM_LOG, None)
    progress = plugin.parse_progress("\nSIMPLE solution converged in 285 iterations\n\n", last)
    assert progress is not None
    assert progress.converged is True
    assert "converged in 285 iterations" in progress.message
    assert progress.step == 12 and progress.residuals == LAST_STEP_RESIDUALS


def test_fatal_error_in_the_log_becomes_the_message(plugin):
    log = "\n\n--> FOAM FATAL ERROR: \nUnknown discretisation scheme nonsense\n\n    From function x\n"
    progress = plugin.parse_progress(log, None)
    assert progress is not None
    assert "FOAM FATAL ERROR" in progress.message
    assert "Unknown discretisation scheme nonsense" in progress.message


# -- judge_exit

def test_exit_0_with_end_is_success(plugin):
    tail = "ExecutionTime = 3.2 s  ClockTime = 4 s\n\nEnd\n\nFinalising parallel run\n"
    outcome = plugin.judge_exit(0, tail)
    assert outcome.ok is True


def test_exit_0_without_end_fails(plugin):
    outcome = plugin.judge_exit(0, "Time = 40\n\nExecutionTime = 3.2 s  ClockTime = 4 s\n")
    assert outcome.ok is False
    assert "End" in outcome.reason


def test_end_must_be_a_line_of_its_own(plugin):
    assert plugin.judge_exit(0, "EndTime reached\n").ok is False
    assert plugin.judge_exit(0, "The End\n").ok is False


def test_nonzero_exit_fails_even_with_end(plugin):
    outcome = plugin.judge_exit(137, "End\n")
    assert outcome.ok is False
    assert "137" in outcome.reason


@pytest.mark.parametrize("code", [0, 1])
def test_fatal_error_reason_is_extracted(plugin, code):
    tail = ("\n\n--> FOAM FATAL IO ERROR: \ncannot find file \"/cases/x/0/U\"\n\n"
            "file: /cases/x/0/U at line 0.\n\n    From function Foam::readStream\n\nFOAM exiting\n\nEnd\n")
    outcome = plugin.judge_exit(code, tail)
    assert outcome.ok is False
    assert "FOAM FATAL ERROR" in outcome.reason
    assert 'cannot find file "/cases/x/0/U"' in outcome.reason
    assert f"exit code {code}" in outcome.reason


# -- controlDict edits

@pytest.fixture
def control_dict() -> str:
    if not (PITZ / "system" / "controlDict").is_file():
        pytest.skip("pitzDaily tutorial not installed")
    return (PITZ / "system" / "controlDict").read_text()


def test_set_entry_replaces_an_existing_top_level_key(control_dict):
    old = read_entry(control_dict, "endTime")
    assert old is not None and old != "300"

    text = set_entry(control_dict, "endTime", "300")

    assert read_entry(text, "endTime") == "300"
    assert text.count("endTime") == control_dict.count("endTime")  # replaced, not added
    # every other line is untouched
    changed = [(a, b) for a, b in zip(control_dict.splitlines(), text.splitlines(), strict=False) if a != b]
    assert len(changed) == 1 and changed[0][0].startswith("endTime")
    assert len(text.splitlines()) == len(control_dict.splitlines())


def test_set_entry_appends_a_missing_key(control_dict):
    assert read_entry(control_dict, "maxCo") is None
    text = set_entry(control_dict, "maxCo", "0.5")
    assert read_entry(text, "maxCo") == "0.5"
    assert text.startswith(control_dict.rstrip("\n"))
    assert text.endswith("\nmaxCo 0.5;\n")


def test_set_entry_does_not_touch_indented_sub_dictionary_keys(control_dict):
    # `format ascii;` lives inside FoamFile { ... } (indented); only a top-level entry may be set
    assert "    format      ascii;" in control_dict
    text = set_entry(control_dict, "format", "binary")
    assert "    format      ascii;" in text
    assert text.endswith("\nformat binary;\n")
    assert read_entry(text, "format") == "binary"


def test_set_entry_does_not_match_keys_that_merely_share_a_prefix(control_dict):
    # `write` is a prefix of writeControl/writeInterval/writeFormat...
    text = set_entry(control_dict, "write", "x")
    assert read_entry(text, "writeInterval") == read_entry(control_dict, "writeInterval")
    assert read_entry(text, "writeFormat") == read_entry(control_dict, "writeFormat")
    assert text.endswith("\nwrite x;\n")


def test_read_entry_strips_alignment_spaces(control_dict):
    assert read_entry(control_dict, "application") == "simpleFoam"
    assert read_entry(control_dict, "stopAt") == "endTime"
    assert read_entry(control_dict, "version") is None  # only inside FoamFile


# -- prepare on the cavity tutorial

@pytest.fixture
def cavity(tmp_path: Path) -> Path:
    """A copy of the cavity tutorial, with 0/U gzipped as some packaged tutorials ship their files."""
    if not CAVITY.is_dir():
        pytest.skip("cavity tutorial not installed")
    src = tmp_path / "cavity"
    shutil.copytree(CAVITY, src)
    u = src / "0" / "U"
    with open(u, "rb") as fin, gzip.open(str(u) + ".gz", "wb") as fout:
        shutil.copyfileobj(fin, fout)
    u.unlink()
    # leftovers of an earlier run that must not be copied
    (src / "processor0").mkdir()
    (src / "log.icoFoam").write_text("old log\n")
    return src


def two_node_context(run_dir: Path, as_root: bool) -> LaunchContext:
    nodes = (NodeSlots("node-01", "localhost", 1), NodeSlots("node-02", "localhost", 1))
    return LaunchContext(job_id="abcd1234", run_id="run-001", run_dir=run_dir, nodes=nodes,
                         hostfile="hostfile", as_root=as_root)


def options_for(case: Path, **parameters) -> OpenFOAMOptions:
    return OpenFOAMOptions.model_validate({"name": "openfoam", "application": "icoFoam", "case": str(case),
                                           "parameters": parameters})


@needs_tutorials
@pytest.mark.parametrize("as_root", [False, True])
def test_prepare_writes_a_ready_parallel_case(plugin, cavity, tmp_path, as_root):
    run_dir = tmp_path / "run"
    options = options_for(cavity, endTime=0.1, writeInterval=5)

    prepared = plugin.prepare(options, two_node_context(run_dir, as_root))

    # gzipped inputs are unpacked (and the .gz removed); earlier results are not copied
    u = run_dir / "0" / "U"
    assert u.is_file() and not (run_dir / "0" / "U.gz").exists()
    assert u.read_text() == (CAVITY / "0" / "U").read_text()
    assert not list(run_dir.rglob("*.gz"))
    assert not (run_dir / "processor0").exists() and not (run_dir / "log.icoFoam").exists()
    assert (cavity / "0" / "U.gz").exists()  # the source case is left alone

    # controlDict carries the parameters, stopAt endTime, and the OptimisationSwitches
    control = (run_dir / "system" / "controlDict").read_text()
    assert read_entry(control, "endTime") == "0.1"
    assert read_entry(control, "writeInterval") == "5"
    assert read_entry(control, "stopAt") == "endTime"
    assert read_entry(control, "deltaT") == read_entry((CAVITY / "system" / "controlDict").read_text(), "deltaT")
    switches = control[control.index("OptimisationSwitches"):]
    assert "fileModificationSkew 0;" in switches

    # decomposition over the two nodes
    decompose = (run_dir / "system" / "decomposeParDict").read_text()
    assert read_entry(decompose, "numberOfSubdomains") == "2"
    assert read_entry(decompose, "method") == "simple"

    # what the template gets
    assert prepared.template == "openfoam/run.sh.j2"
    assert prepared.progress_total == 0.1
    assert prepared.log_file == "log.icoFoam"
    ctx = prepared.context
    assert ctx["application"] == "icoFoam" and ctx["nprocs"] == 2 and ctx["hostfile"] == "hostfile"
    assert ctx["log_file"] == prepared.log_file
    assert ctx["mesh"] is True  # blockMeshDict and no polyMesh yet
    assert ctx["reconstruct"] is True
    assert ("--allow-run-as-root" in ctx["mpi_flags"]) is as_root
    assert all(isinstance(f, str) for f in ctx["mpi_flags"])
    assert prepared.env.get("WM_PROJECT_DIR")


@needs_tutorials
def test_prepare_on_one_process_needs_no_decomposition(plugin, cavity, tmp_path):
    run_dir = tmp_path / "run"
    ctx = LaunchContext("j", "run-001", run_dir, (NodeSlots("node-01", "localhost", 1),), "hostfile", False)
    prepared = plugin.prepare(options_for(cavity), ctx)
    assert not (run_dir / "system" / "decomposeParDict").exists()
    assert prepared.context["nprocs"] == 1
    # without parameters, endTime stays the tutorial's and is the progress total
    end = read_entry((CAVITY / "system" / "controlDict").read_text(), "endTime")
    assert prepared.progress_total == float(end)


@needs_tutorials
def test_prepare_skips_the_mesh_when_one_exists(plugin, cavity, tmp_path):
    (cavity / "constant" / "polyMesh").mkdir(parents=True)
    (cavity / "constant" / "polyMesh" / "points").write_text("()\n")
    prepared = plugin.prepare(options_for(cavity), two_node_context(tmp_path / "run", False))
    assert prepared.context["mesh"] is False


class MemoryRunFiles:
    """The narrow RunFiles protocol over a dict, recording writes."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = dict(files)
        self.writes: list[str] = []

    def read_text(self, rel: str) -> str:
        return self.files[rel]

    def write_text(self, rel: str, text: str) -> None:
        self.writes.append(rel)
        self.files[rel] = text


def test_request_stop_sets_stop_at_write_now(plugin, control_dict):
    files = MemoryRunFiles({"system/controlDict": control_dict})

    assert plugin.request_stop(files) is True

    assert files.writes == ["system/controlDict"]
    text = files.files["system/controlDict"]
    assert read_entry(text, "stopAt") == "writeNow"
    assert read_entry(text, "endTime") == read_entry(control_dict, "endTime")


# -- command plugin

@pytest.fixture
def command() -> Command:
    return Command()


def test_command_progress_fraction(command):
    progress = command.parse_progress("starting\nprogress: 3/10\n", None)
    assert (progress.step, progress.total) == (3, 10)
    assert progress.fraction == pytest.approx(0.3)


def test_command_progress_percent(command):
    progress = command.parse_progress("progress: 40%\n", None)
    assert (progress.step, progress.total) == (40, 100)
    assert progress.fraction == pytest.approx(0.4)


def test_command_progress_last_line_wins_and_other_fields_are_kept(command):
    last = Progress(step=1, total=10, message="hello")
    progress = command.parse_progress("progress: 2/10\nwork\nPROGRESS = 7 / 10\n", last)
    assert (progress.step, progress.total) == (7, 10)
    assert progress.message == "hello"
    assert last.step == 1  # the previous progress is not mutated


def test_command_without_progress_lines_returns_none(command):
    assert command.parse_progress("hello\nmy progress: 3/10\nprogress: soon\n", None) is None


def test_command_prepare_copies_inputs_and_passes_env(command, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "data.txt").write_text("42\n")
    (tmp_path / "script.sh").write_text("echo hi\n")
    options = CommandOptions.model_validate({
        "name": "command", "command": ["bash", "script.sh"], "inputs": [str(tmp_path / "in"),
                                                                       str(tmp_path / "script.sh")],
        "env": {"LICENSE_SERVER": "27000@lic"}})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ctx = LaunchContext("j", "run-001", run_dir, (NodeSlots("node-01", "localhost", 1),), "hostfile", False)

    prepared = command.prepare(options, ctx)

    assert (run_dir / "in" / "data.txt").read_text() == "42\n"
    assert (run_dir / "script.sh").read_text() == "echo hi\n"
    assert prepared.template == "command/run.sh.j2"
    assert prepared.context == {"command": ["bash", "script.sh"], "append_log": False}
    assert prepared.env == {"LICENSE_SERVER": "27000@lic"}
    assert prepared.log_file == "output.log"


def _time_dirs(run_dir: Path, layout: dict[str, list[str]]) -> None:
    for folder, times in layout.items():
        for t in times:
            (run_dir / folder / t).mkdir(parents=True)


@needs_tutorials
def test_a_restart_continues_from_the_newest_time_every_processor_holds(plugin, cavity, tmp_path):
    run_dir = tmp_path / "run"
    plugin.prepare(options_for(cavity), two_node_context(run_dir, False))
    restart = dataclasses.replace(two_node_context(run_dir, False), mode=RunMode.RESTART, attempt=2)
    # every processor reached 0.25: the latest time
    _time_dirs(run_dir, {"processor0": ["0", "0.1", "0.25"], "processor1": ["0", "0.1", "0.25"]})
    plugin.prepare(options_for(cavity), restart)
    control = (run_dir / "system" / "controlDict").read_text()
    assert read_entry(control, "startFrom") == "latestTime"
    assert plugin.latest_checkpoint(run_dir) == "time 0.25"
    # the node of processor1 was lost after 0.1 was gathered: 0.25 exists for processor0 only
    shutil.rmtree(run_dir / "processor1" / "0.25")
    plugin.prepare(options_for(cavity), restart)
    control = (run_dir / "system" / "controlDict").read_text()
    assert read_entry(control, "startFrom") == "startTime" and read_entry(control, "startTime") == "0.1"
    assert plugin.latest_checkpoint(run_dir) == "time 0.1"


# -- gzipped case files unpack within a cap

def gzipped(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as fout:
        fout.write(bytes(size))


def test_a_gzip_bomb_in_a_case_fails_naming_the_file_and_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setattr(openfoam_module, "GUNZIP_LIMIT", 1 << 20)
    case = tmp_path / "case"
    gzipped(case / "0" / "p.gz", 600 << 10)
    gzipped(case / "0" / "U.gz", 600 << 10)  # each under the cap; together over it
    gzipped(case / "constant" / "small.gz", 10)
    run_dir = tmp_path / "run"
    with pytest.raises(SpecError) as refused:
        openfoam_module.copy_case(case, run_dir)
    [(field, message)] = refused.value.problems
    assert field == "solver.case" and message.startswith("0/p.gz unpacks past the 1 MiB allowed")
    assert (run_dir / "0" / "U").stat().st_size == 600 << 10 and not (run_dir / "0" / "p").exists()
    assert (case / "0" / "p.gz").exists()  # the user's case is left alone

    monkeypatch.setattr(openfoam_module, "GUNZIP_LIMIT", 2 << 20)
    ok = tmp_path / "ok"
    openfoam_module.copy_case(case, ok)
    assert sorted(p.relative_to(ok).as_posix() for p in ok.rglob("*") if p.is_file()) == \
        ["0/U", "0/p", "constant/small"]


def test_a_corrupt_gzip_file_in_a_case_is_a_clear_error(tmp_path):
    case = tmp_path / "case"
    (case / "0").mkdir(parents=True)
    (case / "0" / "U.gz").write_bytes(b"\x1f\x8bnot gzip at all")
    with pytest.raises(SpecError, match="0/U.gz is not a readable gzip file"):
        openfoam_module.copy_case(case, tmp_path / "run")
