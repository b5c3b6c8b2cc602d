"""The job spec contract: valid specs, one (field, message) per problem for invalid ones, and the CLI edge."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.model.errors import SpecError, UserError
from orchestrator.model.spec import load_spec, parse_duration, validate_spec

REPO = Path(__file__).resolve().parents[2]
E2E = REPO / ".venv" / "bin" / "e2e"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"  # port 1: nothing listens there

CANONICAL = """\
name: pitz
solver: {name: openfoam, application: simpleFoam, case: ./pitzDaily, parameters: {endTime: 300, writeInterval: 50}}
cluster: {backend: local, nodes: 2, cores_per_node: 1}
desktop: {enabled: false}
limits: {walltime: 1h}
"""


def make_case(folder: Path) -> Path:
    (folder / "system").mkdir(parents=True)
    (folder / "system" / "controlDict").write_text("endTime 10;\n")
    return folder


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    """A folder holding a minimal OpenFOAM case ./pitzDaily and a case-less ./nocase folder."""
    make_case(tmp_path / "pitzDaily")
    (tmp_path / "nocase").mkdir()
    (tmp_path / "input.txt").write_text("data\n")
    return tmp_path


def write_spec(folder: Path, content, name: str = "job.yaml") -> Path:
    path = folder / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def canonical() -> dict:
    return yaml.safe_load(CANONICAL)


def problems_of(folder: Path, content) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(folder, content))
    assert isinstance(info.value, UserError)
    return info.value.problems


# -- valid specs

def test_canonical_example_validates(spec_dir):
    spec = load_spec(write_spec(spec_dir, CANONICAL))

    assert spec.name == "pitz"
    assert spec.solver.name == "openfoam"
    assert spec.solver.application == "simpleFoam"
    assert spec.solver.case == (spec_dir / "pitzDaily").resolve()
    assert spec.solver.parameters == {"endTime": 300, "writeInterval": 50}
    assert (spec.cluster.backend, spec.cluster.nodes, spec.cluster.cores_per_node) == ("local", 2, 1)
    assert spec.cluster.total_cores == 2
    assert spec.desktop.enabled is False
    assert spec.limits.walltime == 60 * 60
    assert spec.limits.idle_shutdown is None


def test_relative_case_resolves_against_the_spec_files_folder_not_the_cwd(spec_dir, tmp_path_factory, monkeypatch):
    # Given the spec file in one folder and the process running in another
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.chdir(elsewhere)
    path = write_spec(spec_dir, CANONICAL)

    spec = load_spec(path)

    assert spec.solver.case.is_absolute()
    assert spec.solver.case == (spec_dir / "pitzDaily").resolve()
    # And the same text validated relative to the cwd fails (there is no ./pitzDaily there)
    with pytest.raises(SpecError) as info:
        validate_spec(canonical(), base_dir=elsewhere)
    assert [f for f, _ in info.value.problems] == ["solver.case"]


def test_stored_specs_revalidate_without_their_input_folders(spec_dir):
    spec = load_spec(write_spec(spec_dir, CANONICAL))
    stored = spec.model_dump(mode="json")
    shutil.rmtree(spec_dir / "pitzDaily")
    again = validate_spec(stored, check_paths=False)
    assert again == spec
    with pytest.raises(SpecError):
        validate_spec(stored)  # a user's submit still checks the folder


def test_defaults_of_a_minimal_command_spec(tmp_path):
    spec = validate_spec({"name": "m", "solver": {"name": "command", "command": ["true"]}}, base_dir=tmp_path)
    assert spec.solver.name == "command" and spec.solver.command == ["true"]
    assert (spec.cluster.backend, spec.cluster.nodes, spec.cluster.cores_per_node) == ("local", 1, 1)
    assert spec.desktop.enabled is True and spec.desktop.access is None  # a desktop unless asked otherwise
    assert spec.limits.walltime is None


def test_example_specs_validate(tmp_path):
    # sleep.yaml needs nothing; pitz.yaml needs the tutorial next to it (as `e2e demo` arranges)
    sleep = load_spec(REPO / "examples" / "sleep.yaml")
    assert sleep.solver.name == "command" and sleep.name == "count"
    shutil.copy(REPO / "examples" / "pitz.yaml", tmp_path / "pitz.yaml")
    make_case(tmp_path / "pitzDaily")
    pitz = load_spec(tmp_path / "pitz.yaml")
    assert pitz.solver.case == (tmp_path / "pitzDaily").resolve()


@pytest.mark.parametrize("text, seconds", [
    ("1h", 3600),
    ("90s", 90),
    ("1h30m", 3600 + 30 * 60),
    (45, 45),
    ("45", 45),
    ("30m", 30 * 60),
    ("2d", 2 * 86400),
    ("1.5h", 1.5 * 3600),
    ("1d2h3m4s", 86400 + 2 * 3600 + 3 * 60 + 4),
    ("1H30M", 3600 + 30 * 60),
    (2.5, 2.5),
])
def test_durations_parse_to_seconds(tmp_path, text, seconds):
    assert parse_duration(text) == seconds
    spec = validate_spec({"name": "d", "solver": {"name": "command", "command": ["true"]},
                          "limits": {"walltime": text, "idle_shutdown": text}}, base_dir=tmp_path)
    assert spec.limits.walltime == seconds
    assert spec.limits.idle_shutdown == seconds
    assert isinstance(spec.limits.walltime, float)


def test_a_boolean_is_not_a_duration(tmp_path):
    with pytest.raises(SpecError) as info:
        validate_spec({"name": "d", "solver": {"name": "command", "command": ["true"]},
                       "limits": {"walltime": True}}, base_dir=tmp_path)
    assert [f for f, _ in info.value.problems] == ["limits.walltime"]


# -- the table of invalid specs: (id, edit of the canonical spec or raw YAML, field, substrings of the message)

def edit(path: str, value=None, *, delete: bool = False):
    """An edit of the canonical spec: set (or delete) the value at a dotted path."""

    def apply(spec: dict) -> dict:
        cur = spec
        parts = path.split(".")
        for part in parts[:-1]:
            cur = cur[part]
        if delete:
            del cur[parts[-1]]
        else:
            cur[parts[-1]] = copy.deepcopy(value)
        return spec

    return apply


def command_solver(**extra):
    return edit("solver", {"name": "command", "command": ["echo", "hi"], **extra})



INVALID = [
    ("unknown solver", edit("solver", {"name": "nastran", "application": "x"}), "solver.name",
     ("'nastran'", "openfoam", "command")),
    ("solver without name", edit("solver.name", delete=True), "solver.name", ("missing", "openfoam", "command")),
    ("unknown field in cluster", edit("cluster.gpus", 4), "cluster.gpus",
     ("unknown field", "backend", "cores_per_node", "nodes")),
    ("unknown field in solver", edit("solver.threads", 4), "solver.threads",
     ("unknown field", "application", "case", "parameters")),
    ("unknown field in command solver", command_solver(shell=True), "solver.shell",
     ("unknown field", "command", "env", "inputs")),
    ("extra top-level field", edit("priority", 1), "priority",
     ("unknown field", "name", "solver", "cluster", "limits")),
    ("unknown backend", edit("cluster.backend", "pbs"), "cluster.backend", ("'local'", "'slurm'")),
    ("zero nodes", edit("cluster.nodes", 0), "cluster.nodes", ("greater than or equal to 1",)),
    ("too many nodes", edit("cluster.nodes", 5000), "cluster.nodes", ("less than or equal to 1024",)),
    ("nodes not a number", edit("cluster.nodes", "two"), "cluster.nodes", ("integer",)),
    ("zero cores", edit("cluster.cores_per_node", 0), "cluster.cores_per_node", ("greater than or equal to 1",)),
    ("name with spaces", edit("name", "my pitz job"), "name", ("letters, digits",)),
    ("name too long", edit("name", "x" * 65), "name", ("at most 64",)),
    ("name starting with a dash", edit("name", "-rm"), "name", ("must start with a letter or digit",)),
    ("missing name", edit("name", delete=True), "name", ("missing",)),
    ("missing solver", edit("solver", delete=True), "solver", ("missing",)),
    ("walltime forever", edit("limits.walltime", "forever"), "limits.walltime",
     ("'forever'", "not a duration", "1h30m")),
    ("walltime zero", edit("limits.walltime", "0s"), "limits.walltime", ("greater than 0",)),
    ("negative idle shutdown", edit("limits.idle_shutdown", "-5m"), "limits.idle_shutdown", ("not a duration",)),
    ("desktop access not a CIDR", edit("desktop.access", ["10.0.0.0/33"]), "desktop.access",
     ("'10.0.0.0/33'", "CIDR")),
    ("desktop depth", edit("desktop.depth", 8), "desktop.depth", ("16, 24 or 32",)),
    ("application with a space", edit("solver.application", "simple Foam"), "solver.application",
     ("pattern",)),
    ("parameter key with a space", edit("solver.parameters", {"bad key": 1}), "solver.parameters",
     ("'bad key'", "not controlDict keywords")),
    pytest.param("parameter value with a semicolon", edit("solver.parameters", {"endTime": "a;b"}),
                 "solver.parameters.endTime", ("'a;b'",),
                 id="parameter value with a semicolon"),
    ("unknown mesh mode", edit("solver.mesh", "snappy"), "solver.mesh", ("'auto'", "'blockMesh'", "'none'")),
    ("mpi arg with a space", edit("solver.mpi_args", ["--mca x; rm"]), "solver.mpi_args.0", ("pattern",)),
    ("missing case folder", edit("solver.case", "./nope"), "solver.case", ("does not exist", "nope")),
    ("case without controlDict", edit("solver.case", "./nocase"), "solver.case",
     ("not an OpenFOAM case", "system/controlDict")),
    ("empty command", command_solver(command=[]), "solver.command", ("at least 1",)),
    ("empty command word", command_solver(command=[""]), "solver.command.0", ("at least 1 character",)),
    ("NUL in a command word", command_solver(command=["echo", "a\x00b"]), "solver.command", ("NUL",)),
    ("env name starting with a digit", command_solver(env={"1X": "v"}), "solver.env", ("'1X'",)),
    ("missing input", command_solver(inputs=["./nope.txt"]), "solver.inputs.0", ("does not exist",)),
    ("YAML list", "- name: pitz\n- solver: x\n", "", ("must be a mapping", "list")),
    ("YAML scalar", "just some words\n", "", ("must be a mapping", "str")),
    ("empty file", "", "", ("must be a mapping",)),
    ("broken YAML", "name: pitz\ncluster: {nodes: 2}\nsolver:\n  name: openfoam: simpleFoam\n", "",
     ("not valid YAML", "line 4")),
    ("unreadable file", None, "", ("cannot read",)),
]


def _ids(row):
    return row.id if hasattr(row, "id") else row[0]


@pytest.mark.parametrize("label, change, field, expected", INVALID, ids=[_ids(r) for r in INVALID])
def test_invalid_spec_reports_its_field_and_message(spec_dir, label, change, field, expected):
    # Given the canonical spec with exactly one mistake (or raw text)
    if change is None:
        path = spec_dir / "missing.yaml"
        with pytest.raises(SpecError) as info:
            load_spec(path)
        problems = info.value.problems
    else:
        content = change if isinstance(change, str) else change(canonical())
        problems = problems_of(spec_dir, content)

    # Then exactly one problem is reported, on that field, with a helpful message
    assert len(problems) == 1, problems
    got_field, message = problems[0]
    assert got_field == field, problems
    for part in expected:
        assert part in message, (part, message)


def test_the_invalid_table_is_large_enough():
    assert len(INVALID) >= 20
    assert len({_ids(r) for r in INVALID}) == len(INVALID)


def test_several_problems_are_reported_one_per_field(spec_dir):
    spec = canonical()
    spec["name"] = "bad name"
    spec["cluster"]["nodes"] = 0
    spec["limits"]["idle_shutdown"] = "soon"
    spec["solver"]["application"] = "simple Foam"

    problems = problems_of(spec_dir, spec)

    fields = [f for f, _ in problems]
    assert len(problems) >= 2
    assert sorted(fields) == sorted(["name", "cluster.nodes", "limits.idle_shutdown", "solver.application"])
    assert len(set(fields)) == len(fields)


def test_error_message_lists_every_problem_under_the_source(spec_dir):
    spec = canonical()
    spec["name"] = "bad name"
    spec["cluster"]["backend"] = "pbs"
    path = write_spec(spec_dir, spec)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    text = info.value.message
    assert text.splitlines()[0] == f"{path} is invalid (2 problems):"
    for field, msg in info.value.problems:
        assert f"  - {field}: {msg}" in text.splitlines()


def test_parameter_value_with_shell_characters_is_rejected(spec_dir):
    # Whatever the field naming, "a;b" must never reach a controlDict
    spec = canonical()
    spec["solver"]["parameters"] = {"endTime": "a;b"}
    problems = problems_of(spec_dir, spec)
    assert problems and all(f.startswith("solver.parameters.endTime") for f, _ in problems)


def test_desktop_enabled_with_access_rules_validates(spec_dir):
    spec = canonical()
    spec["desktop"] = {"enabled": True, "access": ["everywhere", "192.0.2.7", "2001:db8::/32"]}
    parsed = load_spec(write_spec(spec_dir, spec))
    assert parsed.desktop.enabled is True
    assert parsed.desktop.access == ["everywhere", "192.0.2.7/32", "2001:db8::/32"]


def test_validate_spec_rejects_non_mappings_directly():
    for data in ([1, 2], "name: x", None, 42):
        with pytest.raises(SpecError) as info:
            validate_spec(data)
        assert info.value.problems == [("", f"must be a mapping of fields, got {type(data).__name__}")]


# -- the CLI edge: validation happens before any connection to Redis

def _cli_env(home: Path, redis_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2E_") and k != "REDIS_URL"}
    env.update(E2E_HOME=str(home), COLUMNS="250", NO_COLOR="1", TERM="dumb")
    if os.environ.get("E2E_RUN_AS"):  # a root test session: the engine host's CLI jobs run as this account
        env["E2E_RUN_AS"] = os.environ["E2E_RUN_AS"]
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return env


def _run_cli(args: list[str], cwd: Path, home: Path,
             redis_url: str | None = UNREACHABLE_REDIS) -> subprocess.CompletedProcess:
    return subprocess.run([str(E2E), *args], cwd=cwd, env=_cli_env(home, redis_url), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.mark.skipif(not E2E.exists(), reason="the e2e console script is not installed in .venv")
@pytest.mark.parametrize("redis_url", [UNREACHABLE_REDIS, None], ids=["unreachable-redis", "no-engine-at-all"])
def test_cli_submit_of_an_invalid_spec_exits_2_without_redis(tmp_path, redis_url):
    # Given an invalid spec, an empty E2E_HOME, and a Redis URL nobody listens on (or no engine at all:
    # no REDIS_URL and no stack.json, where merely building a client would be a StackError, exit 3)
    home = tmp_path / "home"
    home.mkdir()
    bad = write_spec(tmp_path, {"name": "my job", "solver": {"name": "nastran"}}, name="bad.yaml")

    # When it is submitted
    result = _run_cli(["submit", str(bad)], tmp_path, home, redis_url)

    # Then the problems are printed, the exit code is 2, there is no traceback, nothing was created
    err = _flat(result.stderr)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "is invalid (2 problems)" in err
    assert "name: must start with a letter or digit" in err
    assert "solver.name: unknown solver 'nastran'" in err
    assert "Redis" not in err
    assert list(home.iterdir()) == []
    assert result.stdout.strip() == ""


@pytest.mark.skipif(not E2E.exists(), reason="the e2e console script is not installed in .venv")
def test_cli_submit_of_broken_yaml_exits_2_with_the_line(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    bad = write_spec(tmp_path, "name: x\nsolver: [command\n", name="broken.yaml")
    result = _run_cli(["submit", str(bad)], tmp_path, home)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "not valid YAML at line" in _flat(result.stderr)


@pytest.mark.skipif(not E2E.exists(), reason="the e2e console script is not installed in .venv")
def test_cli_submit_of_a_valid_spec_does_reach_for_redis(tmp_path):
    # The contrast that makes the test above meaningful: a valid spec gets past validation and then
    # fails on the unreachable Redis (exit 3, an infrastructure error), still without a traceback.
    home = tmp_path / "home"
    home.mkdir()
    good = write_spec(tmp_path, {"name": "ok", "solver": {"name": "command", "command": ["true"]}})
    result = _run_cli(["submit", str(good)], tmp_path, home)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot reach the engine's Redis" in _flat(result.stderr)


def test_a_key_that_is_not_text_names_the_mapping_holding_it():
    """YAML `monitor: {? : }` (or `null:`) gives a None key; the refusal names `monitor`, not `monitor.None`
    (found by the generated-edits fault suite)."""
    with pytest.raises(SpecError) as caught:
        validate_spec({"name": "x", "solver": {"name": "command", "command": ["true"]}, "monitor": {None: None}})
    assert caught.value.problems[0][0] == "monitor" and "not text" in caught.value.problems[0][1]
