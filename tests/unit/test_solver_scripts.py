"""Every vendor plugin's rendered script passes `bash -n` and shellcheck (1 and 3 nodes, each mode), and hostile
strings in any options field or template value never execute: they are refused by the options model, or they
reach the launcher as one unchanged argument (reusing the payloads of test_rendering.py)."""

from __future__ import annotations

import shutil
import subprocess
import typing
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from orchestrator.model.errors import UserError
from orchestrator.model.rendering import render
from solvers.base import registry
from solvers.contract import launch_context
from tests.conftest import require
from tests.unit.solver_cases import CASES, DATA
from tests.unit.test_rendering import (
    PAYLOAD_IDS,
    PAYLOADS,
    REAL_PATH,
    bash_syntax_ok,
    hostile,
    modes,
    recorded_argv,
    run_script,
)

VENDOR = ["fluent", "mechanical", "electronics", "starccm", "calculix"]
LAUNCHERS = ["fluent", "ansys222", "ansys231", "ansys232", "ansys241", "ansys242", "ansys251", "ansys252",
             "ansysedt", "starccm+", "ccx"]
# context values that only name files the script redirects to or tests, never launcher arguments
NOT_ARGUMENTS = {"log_file", "stdout", "stop_file"}
BASE_OPTIONS = {"fluent": {"case": str(DATA / "elbow.cas.h5")}, "mechanical": {"input": str(DATA / "beam.dat")},
                "electronics": {"project": str(DATA / "patch.aedt")}, "starccm": {"sim": str(DATA / "pipe.sim")},
                "calculix": {"input": str(DATA / "cantilever.inp")}}


@pytest.fixture(scope="module")
def launcher_stubs(tmp_path_factory) -> Path:
    """Stand-ins for every launcher: each records argc and argv (NUL-separated) to $STUB_CALLS/<name>."""
    bin_dir = tmp_path_factory.mktemp("launchers")
    for name in LAUNCHERS:
        stub = bin_dir / name
        stub.write_text('#!/bin/bash\n{ printf \'%s\\0\' "$#"; for a in "$@"; do printf \'%s\\0\' "$a"; done; }'
                        ' > "$STUB_CALLS/${0##*/}"\nexit 0\n')
        stub.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rendered_script_passes_bash_n_and_shellcheck(case, tmp_path):
    _, script = case.render(tmp_path / "run")
    bash_syntax_ok(script, tmp_path)
    shellcheck = shutil.which("shellcheck")
    require(shellcheck is not None, "shellcheck (apt-get install shellcheck)")
    result = subprocess.run([shellcheck, "--shell=bash", "--severity=style", "-"], input=script,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"shellcheck on {case.id}:\n{result.stdout}\n--- script ---\n{script}"


def test_the_cases_cover_every_vendor_solver_on_one_and_three_nodes():
    assert {(c.solver, c.nodes) for c in CASES} >= {(s, n) for s in VENDOR for n in (1, 3)}


# -- hostile values in the options (through validation and prepare)

def _string_fields(model) -> list[str]:
    """Option fields that accept a string (str, Secret, paths, lists of them)."""
    names = []
    for name, info in model.model_fields.items():
        if name == "name":
            continue
        text = repr(info.annotation)
        if any(t in text for t in ("str", "Path", "SecretStr")):
            names.append(name)
    return names


def _hostile_value(model, field: str, value: str, where: Path):
    """The payload shaped for the field: a file of that name for path fields, a one-item list for lists."""
    text = repr(model.model_fields[field].annotation)
    if "Path" in text:
        suffix = {"case": ".cas.h5", "data": ".dat.h5", "journal": ".jou", "input": ".inp", "project": ".aedt",
                  "sim": ".sim", "macro": ".java", "include_files": ".inp"}.get(field, ".dat")
        path = where / "inputs" / (value.replace("/", "_") + suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("iteration = 0\n")
        value = str(path)
    return [value] if typing.get_origin(model.model_fields[field].annotation) is list or text.startswith("list") \
        else value


@pytest.mark.parametrize("solver", VENDOR)
@pytest.mark.parametrize("payload", PAYLOADS, ids=PAYLOAD_IDS)
def test_hostile_option_values_are_refused_or_inert(solver, payload, launcher_stubs, tmp_path):
    plugin = registry().get(solver)
    mark = tmp_path / "MARK"
    value = hostile(payload, mark)
    fields = _string_fields(plugin.Options)
    assert fields, f"{solver}: no string fields found (the test would pass vacuously)"
    for field in fields:
        raw = {"name": solver, **BASE_OPTIONS[solver], field: _hostile_value(plugin.Options, field, value, tmp_path)}
        try:
            options = plugin.Options.model_validate(raw)
        except ValidationError as exc:
            assert field in str(exc), f"{solver}.{field}: the error does not name the field: {exc}"
            continue
        run_dir = tmp_path / f"run-{field}"
        ctx = launch_context(run_dir, 3)
        try:
            prepared = plugin.prepare(options, ctx)
        except UserError:
            continue
        script = render((plugin.templates_root,), prepared.template, {**prepared.context, "ctx": ctx})
        bash_syntax_ok(script, tmp_path)
        calls = run_dir / ".calls"
        calls.mkdir()
        result = run_script(script, run_dir, launcher_stubs, calls)
        assert not mark.exists(), f"INJECTION via {solver}.{field}:\n{script}\n{result.stderr}"
        secret = isinstance(getattr(options, field), SecretStr)
        if secret:
            assert value not in script, f"{solver}.{field}: a secret reached run.sh"


# -- hostile values in every string the templates receive

# one case per template and mode is enough here (the golden cases cover the rest of the shapes)
HOSTILE_CASES = [c for c in CASES if c.id in ("fluent-transient-openmpi-3nodes", "mechanical-232-hybrid-3nodes",
                                               "electronics-setup-gpu-3nodes", "starccm-power-server-3nodes",
                                               "calculix-restart-3nodes")]


@pytest.mark.parametrize("case", HOSTILE_CASES, ids=[c.id for c in HOSTILE_CASES])
@pytest.mark.parametrize("payload", PAYLOADS, ids=PAYLOAD_IDS)
def test_hostile_template_values_stay_one_argument(case, payload, launcher_stubs, tmp_path):
    mark = tmp_path / "MARK"
    value = hostile(payload, mark)
    prepared, _ = case.render(tmp_path / "base")
    plugin = registry().get(case.solver)
    base = {**prepared.context, "ctx": launch_context(tmp_path / "ctx", case.nodes)}
    started = []
    for n, (label, fields) in enumerate(modes(base)):
        context = {**base}
        for field in fields:
            key = field[0]
            if len(field) == 1:
                context[key] = value
            elif key != "ctx":
                context[key] = list(context[key]) if isinstance(context[key], list) else dict(context[key])
                context[key][field[1]] = value
        script = render((plugin.templates_root,), prepared.template, context)
        bash_syntax_ok(script, tmp_path)
        cwd = tmp_path / f"run-{n}"
        calls = cwd / ".calls"
        calls.mkdir(parents=True)
        for name in ("log_file", "stdout"):
            if isinstance(context.get(name), str):
                (cwd / context[name]).parent.mkdir(parents=True, exist_ok=True)
        (cwd / "run.sh").write_text(script)
        # all modes at once: the stop-watching templates poll, and one by one they would take seconds
        proc = subprocess.Popen(["bash", "run.sh"], cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True,
                                env={"PATH": f"{launcher_stubs}:{REAL_PATH}", "STUB_CALLS": str(calls),
                                     "HOME": str(cwd / "home"), "LC_ALL": "C"})
        started.append((label, fields, script, calls, proc))
    for label, fields, script, calls, proc in started:
        stderr = proc.communicate(timeout=60)[1]
        why = f"{case.id} field {label}\n--- script ---\n{script}\n--- stderr ---\n{stderr}"
        assert not mark.exists(), f"INJECTION: MARK was created via {why}"
        argv = next((recorded_argv(calls, p.name) for p in calls.iterdir()), None)
        if argv is None:
            continue  # a hostile launcher name: an unknown command, never shell code
        for field in fields:
            if field[0] in NOT_ARGUMENTS or field[0] == "ctx":
                continue
            assert any(a == value or a.endswith("=" + value) or a.endswith(value) for a in argv), \
                f"{label}: {value!r} did not reach the launcher as one argument: {argv}\n{why}"
