"""THE HOSTILE TEMPLATE TEST: no value a plugin hands to a launch template can inject shell code.

Every template the plugins render is rendered with every string field of a realistic context (built by the
plugins' own prepare(), as lifecycle.materialize_run does) set to hostile payloads, one field at a time and all
at once. Each rendering must pass `bash -n`; run.sh scripts are then executed against stub binaries that record
their argv, and the wrapper is executed with a recording run.sh: the MARK file must never appear and every
hostile string must reach its program as one argument, unchanged.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.model.errors import PluginError
from orchestrator.model.rendering import Raw, env_name, render, shell_quote
from solvers.base import TEMPLATES_ROOT, LaunchContext, NodeSlots
from solvers.command import Command, CommandOptions
from solvers.openfoam import OpenFOAM, OpenFOAMOptions

ROOTS = (TEMPLATES_ROOT,)
BASH = shutil.which("bash") or "/bin/bash"
REAL_PATH = "/usr/local/bin:/usr/bin:/bin"  # so that an injected `touch` WOULD run
STUBS = ["blockMesh", "decomposePar", "mpirun", "reconstructPar", "simpleFoam", "argrec"]

# "MARK" is replaced by an absolute path inside the test's tmp_path.
PAYLOADS = [
    "$(touch MARK)",
    "`touch MARK`",
    "; touch MARK",
    "a\ntouch MARK",
    "' ; touch MARK ; '",
    '" ; touch MARK ; "',
    "a b c",
    "&& touch MARK",
    "| touch MARK",
    "$HOME",
    "*",
    "\\",
    "${IFS}touch${IFS}MARK",
    # beyond the brief: template syntax, mixed quotes, a trailing backslash, an option-looking word
    "{{ 7 * 7 }}{% raw %}",
    "a'b\"c$(touch MARK)`touch MARK`",
    "x\\",
    "--version > MARK",
]
PAYLOAD_IDS = [f"p{i:02d}" for i in range(len(PAYLOADS))]


def hostile(template: str, mark: Path) -> str:
    return template.replace("MARK", str(mark))


# -- stubs and helpers

@pytest.fixture(scope="session")
def stub_bin(tmp_path_factory) -> Path:
    """Stub solver/MPI binaries: each writes argc then argv (NUL-separated) to $STUB_CALLS/<name>, exits 0."""
    bin_dir = tmp_path_factory.mktemp("stub-bin")
    for name in STUBS:
        stub = bin_dir / name
        stub.write_text('#!/bin/bash\n{ printf \'%s\\0\' "$#"; for a in "$@"; do printf \'%s\\0\' "$a"; done; }'
                        ' > "$STUB_CALLS/${0##*/}"\nexit 0\n')
        stub.chmod(0o755)
    return bin_dir


def bash_syntax_ok(script: str, where: Path) -> None:
    path = where / "syntax-check.sh"
    path.write_text(script)
    result = subprocess.run([BASH, "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"bash -n failed: {result.stderr}\n--- script ---\n{script}"


def run_script(script: str, cwd: Path, stub_bin: Path, calls: Path) -> subprocess.CompletedProcess:
    (cwd / "run.sh").write_text(script)
    env = {"PATH": f"{stub_bin}:{REAL_PATH}", "STUB_CALLS": str(calls), "HOME": str(cwd / "home"),
           "LC_ALL": "C"}
    return subprocess.run([BASH, "run.sh"], cwd=cwd, env=env, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


def recorded_argv(calls: Path, name: str) -> list[str] | None:
    path = calls / name
    if not path.exists():
        return None
    count, *argv = path.read_bytes().decode().split("\0")[:-1]
    assert int(count) == len(argv), f"{name}: argv record is corrupt"
    return argv


def string_fields(context: dict[str, Any]) -> list[tuple]:
    """Paths of every string in a template context: (key,) for strings, (key, i) for list items."""
    fields = []
    for key, value in context.items():
        if isinstance(value, str):
            fields.append((key,))
        elif isinstance(value, (list, tuple)):
            fields += [(key, i) for i, item in enumerate(value) if isinstance(item, str)]
        elif isinstance(value, dict):
            fields += [(key, k) for k, item in value.items() if isinstance(item, str)]
    return fields


def object_fields(context: dict[str, Any]) -> list[tuple]:
    """String attributes of dataclass values (the LaunchContext `ctx`): no template uses them today, so
    they are only made hostile in the all-at-once pass, which covers a template that starts to."""
    return [(key, f.name) for key, value in context.items() if dataclasses.is_dataclass(value)
            for f in dataclasses.fields(value) if isinstance(getattr(value, f.name), str)]


def with_values(context: dict[str, Any], fields: list[tuple], value: str) -> dict[str, Any]:
    out = {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
           for k, v in context.items()}
    for field in fields:
        if len(field) == 1:
            out[field[0]] = value
        elif dataclasses.is_dataclass(out[field[0]]):
            out[field[0]] = dataclasses.replace(out[field[0]], **{field[1]: value})
        else:
            out[field[0]][field[1]] = value
    return out


def modes(context: dict[str, Any]) -> list[tuple[str, list[tuple]]]:
    """One string field at a time, then all at once."""
    fields = string_fields(context)
    return [(".".join(map(str, f)), [f]) for f in fields] + [("ALL", fields + object_fields(context))]


# -- contexts as the plugins' prepare() make them (lifecycle.materialize_run adds ctx)

def launch_context(run_dir: Path, nprocs: int) -> LaunchContext:
    nodes = tuple(NodeSlots(f"node-{i:02d}", "localhost", 1) for i in range(1, nprocs + 1))
    return LaunchContext("abcd1234", "run-001", run_dir, nodes, "hostfile", as_root=True)


@pytest.fixture(scope="session")
def openfoam_contexts(tmp_path_factory) -> dict[int, dict[str, Any]]:
    """The run.sh contexts OpenFOAM.prepare() returns for 1 and 2 processes."""
    base = tmp_path_factory.mktemp("foam")
    case = base / "case"
    (case / "system").mkdir(parents=True)
    (case / "system" / "controlDict").write_text("application simpleFoam;\nendTime 10;\n")
    (case / "system" / "blockMeshDict").write_text("// mesh\n")
    options = OpenFOAMOptions.model_validate({"name": "openfoam", "application": "simpleFoam", "case": str(case),
                                              "mpi_args": ["--bind-to", "none"]})
    contexts = {}
    for nprocs in (1, 2):
        ctx = launch_context(base / f"run{nprocs}", nprocs)
        prepared = OpenFOAM().prepare(options, ctx)
        assert prepared.template == "openfoam/run.sh.j2"
        contexts[nprocs] = {**prepared.context, "ctx": ctx}
    return contexts


@pytest.fixture(scope="session")
def command_context(tmp_path_factory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("cmd")
    options = CommandOptions.model_validate({"name": "command", "command": ["argrec", "first", "second"]})
    ctx = launch_context(base / "run", 1)
    ctx.run_dir.mkdir()
    prepared = Command().prepare(options, ctx)
    assert prepared.template == "command/run.sh.j2"
    return {**prepared.context, "ctx": ctx}


def test_the_contexts_have_the_string_fields_the_templates_use(openfoam_contexts, command_context):
    # Guards the hostile tests against passing vacuously because prepare() stopped producing strings
    for ctx in openfoam_contexts.values():
        names = {f[0] for f in string_fields(ctx)}
        assert {"application", "hostfile", "log_file", "mpi_flags"} <= names
    assert len(string_fields(command_context)) == 3
    assert {("ctx", "job_id"), ("ctx", "run_id"), ("ctx", "hostfile")} <= set(object_fields(command_context))


# -- openfoam/run.sh.j2

def expected_mpirun_argv(context: dict[str, Any]) -> list[str]:
    return [*context["mpi_flags"], "-np", str(context["nprocs"]), "-hostfile", context["hostfile"],
            "-x", "WM_PROJECT_DIR", "-x", "E2E_RUN_TAG", context["application"], "-parallel"]


@pytest.mark.parametrize("nprocs", [2, 1])
@pytest.mark.parametrize("payload", PAYLOADS, ids=PAYLOAD_IDS)
def test_openfoam_run_script_resists_hostile_values(payload, nprocs, openfoam_contexts, stub_bin, tmp_path):
    mark = tmp_path / "MARK"
    value = hostile(payload, mark)
    base = openfoam_contexts[nprocs]
    for label, fields in modes(base):
        context = with_values(base, fields, value)
        script = render(ROOTS, "openfoam/run.sh.j2", context)
        bash_syntax_ok(script, tmp_path)

        cwd = tmp_path / f"run-{label}"
        calls = cwd / ".calls"
        calls.mkdir(parents=True)
        log_path = cwd / context["log_file"]
        log_path.parent.mkdir(parents=True, exist_ok=True)  # so a hostile log name is a reachable path
        result = run_script(script, cwd, stub_bin, calls)
        why = f"field {label}\n--- script ---\n{script}\n--- stderr ---\n{result.stderr}"

        assert not mark.exists(), f"INJECTION: MARK was created via {why}"
        assert log_path.is_file(), f"the log did not land at the literal path: {why}"
        assert recorded_argv(calls, "blockMesh") == [], why  # mesh: blockMeshDict and no polyMesh
        if nprocs > 1:
            assert result.returncode == 0, why
            assert recorded_argv(calls, "decomposePar") == ["-force"], why
            assert recorded_argv(calls, "mpirun") == expected_mpirun_argv(context), why
            assert recorded_argv(calls, "reconstructPar") == ["-latestTime"], why
        elif context["application"] == base["application"]:
            assert result.returncode == 0, why
            assert recorded_argv(calls, base["application"]) == [], why
        else:
            # the hostile application name is one command word: not found (127), or, when it contains a
            # slash, a relative path to a non-executable file (126) -- never shell code
            assert result.returncode in (126, 127), why
            assert recorded_argv(calls, "mpirun") is None


# -- command/run.sh.j2

@pytest.mark.parametrize("payload", PAYLOADS, ids=PAYLOAD_IDS)
def test_command_run_script_resists_hostile_words(payload, command_context, stub_bin, tmp_path):
    mark = tmp_path / "MARK"
    value = hostile(payload, mark)
    for label, fields in modes(command_context):
        context = with_values(command_context, fields, value)
        script = render(ROOTS, "command/run.sh.j2", context)
        bash_syntax_ok(script, tmp_path)

        cwd = tmp_path / f"run-{label}"
        calls = cwd / ".calls"
        calls.mkdir(parents=True)
        result = run_script(script, cwd, stub_bin, calls)
        why = f"field {label}\n--- script ---\n{script}\n--- stderr ---\n{result.stderr}"

        assert not mark.exists(), f"INJECTION: MARK was created via {why}"
        assert (cwd / "output.log").is_file(), why
        if context["command"][0] == "argrec":
            assert result.returncode == 0, why
            assert recorded_argv(calls, "argrec") == context["command"][1:], why
        else:
            assert result.returncode in (126, 127), why  # one (unknown) command word
            assert recorded_argv(calls, "argrec") is None, why


# -- common/wrapper.sh.j2

WRAPPER_PROBE = """\
#!/bin/bash
printf '%s\\0' "$E2E_JOB_ID" "$E2E_RUN_ID" "$E2E_HOSTFILE" "$E2E_NPROCS" "$E2E_PROBE" "$WM_PROJECT_DIR" > seen.bin
"""


def wrapper_context(run_dir: Path) -> dict[str, Any]:
    """The wrapper context exactly as lifecycle.materialize_run builds it."""
    return {"run_dir": str(run_dir), "job_id": "abcd1234", "run_id": "run-001",
            "hostfile": str(run_dir / "hostfile"), "nprocs": 2,
            "env": {"WM_PROJECT_DIR": "/usr/share/openfoam", "E2E_PROBE": "probe"}, "run_tag": "abcd1234/run-001",
            "meta": ".e2e/attempt-1", "attempt": 1, "mode": "fresh", "stage": str(run_dir / ".e2e/attempt-1/stage.sh")}


@pytest.mark.parametrize("payload", PAYLOADS, ids=PAYLOAD_IDS)
def test_wrapper_resists_hostile_values(payload, tmp_path):
    mark = tmp_path / "MARK"
    value = hostile(payload, mark)
    base = wrapper_context(tmp_path / "placeholder")
    for n, (label, fields) in enumerate(modes(base)):
        if label == "meta":
            continue  # the engine's own attempt folder (".e2e/attempt-N"), never a user value
        # a hostile run_dir is still a real folder: the wrapper must cd into exactly that path
        run_dir = tmp_path / f"runs-{n}" / value if ("run_dir",) in fields else tmp_path / f"runs-{n}" / "r"
        context = with_values(wrapper_context(run_dir), [f for f in fields if f not in (("run_dir",), ("meta",))],
                              value)
        if ("run_dir",) in fields:
            assert context["run_dir"].endswith(value)
        script = render(ROOTS, "common/wrapper.sh.j2", context)
        bash_syntax_ok(script, tmp_path)

        (run_dir / ".e2e" / "attempt-1").mkdir(parents=True)
        (run_dir / "run.sh").write_text(WRAPPER_PROBE)
        (tmp_path / "wrapper.sh").write_text(script)
        result = subprocess.run([BASH, str(tmp_path / "wrapper.sh")], cwd=tmp_path, capture_output=True,
                                text=True, timeout=30, stdin=subprocess.DEVNULL,
                                env={"PATH": REAL_PATH, "HOME": str(tmp_path), "LC_ALL": "C"})
        why = f"field {label}\n--- script ---\n{script}\n--- stderr ---\n{result.stderr}"

        assert not mark.exists(), f"INJECTION: MARK was created via {why}"
        assert result.returncode == 0, why
        assert (run_dir / ".e2e" / "attempt-1" / "exit_code").read_text().strip() == "0", why
        assert (run_dir / ".e2e" / "attempt-1" / "pid").read_text().strip().isdigit(), why
        seen = (run_dir / "seen.bin").read_bytes().decode().split("\0")[:-1]
        env = context["env"]
        assert seen == [context["job_id"], context["run_id"], context["hostfile"], str(context["nprocs"]),
                        env["E2E_PROBE"], env["WM_PROJECT_DIR"]], why


def test_wrapper_claims_a_run_only_once(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".e2e" / "attempt-1").mkdir(parents=True)
    (run_dir / "run.sh").write_text("#!/bin/bash\necho ran >> runs.txt\n")
    script = tmp_path / "wrapper.sh"
    script.write_text(render(ROOTS, "common/wrapper.sh.j2", wrapper_context(run_dir)))
    for _ in range(2):
        subprocess.run([BASH, str(script)], check=True, timeout=30, env={"PATH": REAL_PATH})
    assert (run_dir / "runs.txt").read_text() == "ran\n"


@pytest.mark.parametrize("name", ["A B", "X;touch MARK", "$(touch MARK)", "`touch MARK`", "1X", "", "A-B",
                                  "A\nB", "PATH=/tmp", "A=B C", "${IFS}X", "é"])
def test_wrapper_rejects_hostile_env_names(name, tmp_path):
    context = wrapper_context(tmp_path)
    context["env"] = {hostile(name, tmp_path / "MARK"): "value"}
    with pytest.raises(PluginError):
        render(ROOTS, "common/wrapper.sh.j2", context)
    with pytest.raises(PluginError):
        env_name(name)


def test_env_name_accepts_shell_identifiers():
    for name in ("PATH", "_x", "WM_PROJECT_DIR", "a1"):
        assert env_name(name) == name and isinstance(env_name(name), Raw)
    with pytest.raises(PluginError):
        env_name(5)


# -- reserved words

RESERVED = ["time", "if", "while", "coproc", "function", "select", "until", "case", "for"]


def test_a_reserved_word_as_first_word_is_still_a_command(tmp_path):
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for word in RESERVED:
        (stubs / word).write_text('#!/bin/bash\n{ printf \'%s\\0\' "$#"; for a in "$@"; do printf \'%s\\0\' "$a"; '
                                  'done; } > "$STUB_CALLS/${0##*/}"\n')
        (stubs / word).chmod(0o755)
    failures = []
    for word in RESERVED:
        cwd = tmp_path / f"run-{word}"
        calls = cwd / ".calls"
        calls.mkdir(parents=True)
        script = render(ROOTS, "command/run.sh.j2", {"command": [word, "-v", "x"], "append_log": False})
        result = run_script(script, cwd, stubs, calls)
        if recorded_argv(calls, word) != ["-v", "x"]:
            failures.append((word, result.returncode, result.stderr.strip()))
    assert not failures


# -- the harness can see an injection (so the tests above cannot pass vacuously)

def test_an_unquoted_value_would_be_caught(openfoam_contexts, stub_bin, tmp_path):
    mark = tmp_path / "MARK"
    context = dict(openfoam_contexts[2], application=Raw(f"$(touch {mark})"))
    script = render(ROOTS, "openfoam/run.sh.j2", context)
    calls = tmp_path / ".calls"
    calls.mkdir()
    run_script(script, tmp_path, stub_bin, calls)
    assert mark.exists()


# -- renderer behaviour

@pytest.fixture
def scratch_templates(tmp_path) -> tuple[Path, ...]:
    (tmp_path / "t.j2").write_text("{{ n }}|{{ f }}|{{ b }}|{{ r }}|{{ s }}|{{ p }}\n")
    (tmp_path / "escape.j2").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}\n")
    (tmp_path / "broken.j2").write_text("{% if %}\n")
    return (tmp_path,)


def test_ints_and_raw_pass_through_and_strings_are_quoted(scratch_templates):
    out = render(scratch_templates, "t.j2", {"n": 3, "f": 1.5, "b": True, "r": Raw("$HOME *"),
                                            "s": "a b", "p": Path("/x y")})
    assert out == "3|1.5|true|$HOME *|'a b'|'/x y'\n"


def test_shell_quote_makes_one_word():
    assert shell_quote(7) == 7
    assert shell_quote(False) == "false"
    assert shell_quote(Raw("a b")) == "a b"
    assert shell_quote("plain") == "plain"
    assert shell_quote("a b") == "'a b'"
    assert shell_quote("") == "''"


def test_a_missing_variable_is_a_plugin_error(openfoam_contexts):
    context = dict(openfoam_contexts[2])
    del context["log_file"]
    with pytest.raises(PluginError) as info:
        render(ROOTS, "openfoam/run.sh.j2", context)
    assert "log_file" in info.value.message
    wrapper = wrapper_context(Path("/tmp/x"))
    del wrapper["env"]
    with pytest.raises(PluginError):
        render(ROOTS, "common/wrapper.sh.j2", wrapper)


def test_template_errors_become_plugin_errors(scratch_templates):
    with pytest.raises(PluginError):
        render(scratch_templates, "escape.j2", {})  # the sandbox refuses the attribute walk
    with pytest.raises(PluginError):
        render(scratch_templates, "broken.j2", {})
    with pytest.raises(PluginError):
        render(scratch_templates, "no-such-template.j2", {})
