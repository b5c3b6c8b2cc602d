"""The solver plugin contract as a pytest suite: any plugin (ours or a third party's) runs it against itself.

    from solvers.contract import PluginContract

    class TestMySolverContract(PluginContract):
        plugin = MySolver

        @pytest.fixture
        def options(self, tmp_path):          # a valid `solver:` block, without `name`
            (tmp_path / "model.inp").write_text("...")
            return {"input": str(tmp_path / "model.inp")}

Each test prepares and renders the plugin exactly as the engine does (LaunchContext on 1 and 3 nodes,
run.sh through orchestrator.model.rendering) and checks what the engine relies on.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from orchestrator.model.errors import UserError
from orchestrator.model.rendering import render

from .base import LaunchContext, NodeSlots, Outcome, Prepared, Progress, RunMode, SolverOptions, SolverPlugin

SECRET_MARK = "s3cr3t-MARK-7f1c"
_NOISE = ["", "\n", "garbage without structure\n", "\x00\x01\x02\n", "Error\n", "1 2 3 4 5\n", "iter\n",
          "Time = \n", "*** TIME =\n", "\u00e9\u00e8 \u4e2d\u6587\n", "9" * 5000 + "\n", "a partial line without end"]


class MemoryFiles:
    """A RunFiles over a real run directory, recording what request_stop writes."""

    def __init__(self, root: Path):
        self.root, self.written = root, []

    def read_text(self, rel: str) -> str:
        return (self.root / _relative(rel)).read_text()

    def write_text(self, rel: str, text: str) -> None:
        self.written.append(rel)
        (self.root / _relative(rel)).write_text(text)


def _relative(rel: str) -> str:
    assert not Path(rel).is_absolute() and ".." not in Path(rel).parts, f"{rel!r} leaves the run directory"
    return rel


def launch_context(run_dir: Path, nodes: int, mode: RunMode = RunMode.FRESH, attempt: int = 1,
                   cores: int = 2, site_env: dict[str, str] | None = None) -> LaunchContext:
    slots = tuple(NodeSlots(f"node{i}", f"node{i}.cluster" if nodes > 1 else "localhost", cores)
                  for i in range(1, nodes + 1))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "hostfile").write_text("".join(f"{n.address} slots={n.slots}\n" for n in slots))
    return LaunchContext("job0001", "run-001", run_dir, slots, "hostfile", as_root=False, mode=mode,
                         attempt=attempt, site_env=site_env or {})


def prepare_and_render(plugin: SolverPlugin, options: SolverOptions, ctx: LaunchContext) -> tuple[Prepared, str]:
    """What lifecycle.materialize_run does for the solver script."""
    prepared = plugin.prepare(options, ctx)
    script = render((plugin.templates_root,), prepared.template, {**prepared.context, "ctx": ctx})
    (ctx.run_dir / "run.sh").write_text(script)
    return prepared, script


def secret_fields(model: type[SolverOptions]) -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        text = repr(info.annotation)
        if "SecretStr" in text:
            names.append(name)
    return names


class PluginContract:
    """Mix into a `Test...` class; set `plugin` and define the `options` fixture."""

    plugin: ClassVar[type[SolverPlugin]]

    @pytest.fixture
    def options(self, tmp_path) -> dict[str, Any]:
        raise NotImplementedError("define an `options` fixture returning a valid solver block without `name`")

    # -- helpers
    def validated(self, raw: dict[str, Any]) -> SolverOptions:
        return self.plugin.Options.model_validate({"name": self.plugin.name, **raw})

    def instance(self) -> SolverPlugin:
        return self.plugin()

    # -- identity and options model
    def test_identity(self):
        assert isinstance(self.plugin.name, str) and re.fullmatch(r"[a-z][a-z0-9_-]*", self.plugin.name)
        assert issubclass(self.plugin.Options, SolverOptions)
        assert self.plugin.summary, "a one-line summary is shown by `e2e solvers`"
        schema = self.plugin.Options.model_json_schema()
        assert schema["properties"]["name"].get("const", self.plugin.name) == self.plugin.name

    def test_valid_options_validate(self, options):
        assert self.validated(options).name == self.plugin.name

    def test_unknown_fields_are_refused_by_name(self, options):
        with pytest.raises(ValidationError) as info:
            self.validated({**options, "no_such_field_xyz": 1})
        assert "no_such_field_xyz" in str(info.value)

    def test_another_solvers_name_is_refused(self, options):
        with pytest.raises(ValidationError):
            self.plugin.Options.model_validate({**options, "name": self.plugin.name + "-other"})

    # -- prepare and render
    @pytest.mark.parametrize("nodes", [1, 3])
    def test_prepare_renders_a_script_bash_accepts(self, options, tmp_path, nodes):
        ctx = launch_context(tmp_path / "run", nodes)
        prepared, script = prepare_and_render(self.instance(), self.validated(options), ctx)
        assert isinstance(prepared, Prepared)
        assert script.startswith("#!/bin/bash\n")
        bash = shutil.which("bash") or "/bin/bash"
        result = subprocess.run([bash, "-n", str(ctx.run_dir / "run.sh")], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        log = Path(prepared.log_file)
        assert prepared.log_file and not log.is_absolute() and ".." not in log.parts
        assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) for k in prepared.env)
        assert prepared.progress_total is None or prepared.progress_total >= 0
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in prepared.info.items())

    def test_prepare_writes_only_inside_the_run_directory(self, options, tmp_path):
        outside = tmp_path / "outside"
        outside.mkdir()
        ctx = launch_context(outside / "run", 3)
        prepare_and_render(self.instance(), self.validated(options), ctx)
        assert [p.name for p in outside.iterdir()] == ["run"]

    def test_secrets_reach_only_the_environment(self, options, tmp_path):
        names = secret_fields(self.plugin.Options)
        if not names:
            pytest.skip(f"{self.plugin.name} has no Secret fields")
        opts = self.validated({**options, **{n: SECRET_MARK for n in names}})
        assert SECRET_MARK not in opts.model_dump_json(), "a Secret field shows its value in status dumps"
        ctx = launch_context(tmp_path / "run", 3)
        prepared, script = prepare_and_render(self.instance(), opts, ctx)
        assert SECRET_MARK in "".join(prepared.env.values()), "the licence setting is not exported to the run"
        for path in ctx.run_dir.rglob("*"):
            if path.is_file():
                assert SECRET_MARK not in path.read_text(errors="replace"), f"secret written to {path.name}"
        assert SECRET_MARK not in repr(prepared.context) and SECRET_MARK not in repr(prepared.info)

    def test_restart_keeps_what_the_first_attempt_left(self, options, tmp_path):
        plugin, opts = self.instance(), self.validated(options)
        first = launch_context(tmp_path / "run", 1)
        prepare_and_render(plugin, opts, first)
        before = {p: p.read_bytes() for p in first.run_dir.rglob("*") if p.is_file() and p.name != "run.sh"}
        again = launch_context(tmp_path / "run", 1, mode=RunMode.RESTART, attempt=2)
        try:
            prepare_and_render(plugin, opts, again)
        except UserError:
            pass  # nothing to restart from yet: a clear user error is the right answer
        for path in before:
            assert path.exists(), f"a restart deleted {path.relative_to(first.run_dir)}"

    # -- progress, exit, stop
    def test_parse_progress_tolerates_any_text(self):
        plugin = self.instance()
        assert plugin.parse_progress("", None) is None
        last = None
        for chunk in _NOISE:
            result = plugin.parse_progress(chunk, last)
            assert result is None or isinstance(result, Progress)
            last = result or last

    @pytest.mark.parametrize("code", [0, 1, 2, 137, 143])
    def test_judge_exit_always_answers(self, code):
        plugin = self.instance()
        for tail in ("", "garbage\n", "Error: something\n"):
            outcome = plugin.judge_exit(code, tail)
            assert isinstance(outcome, Outcome) and outcome.reason
        assert not plugin.judge_exit(code, "").ok or code == 0

    def test_request_stop_uses_only_run_directory_files(self, options, tmp_path):
        ctx = launch_context(tmp_path / "run", 3)
        prepare_and_render(self.instance(), self.validated(options), ctx)
        files = MemoryFiles(ctx.run_dir)
        answer = self.instance().request_stop(files)
        assert isinstance(answer, bool)
        assert answer or not files.written, "a plugin that wrote a stop file must say it did (True)"

    def test_cleanup_patterns_are_relative_globs(self):
        for pattern in self.plugin.cleanup_patterns:
            assert pattern and not pattern.startswith("/") and ".." not in Path(pattern).parts, pattern
            assert pattern not in ("*", "**", "*.*"), f"{pattern!r} would delete the whole run"

    def test_live_fields_are_options_and_declared_where_apply_live_is(self):
        # edit forms mark these "(live)" and offer "apply live" only for plugins with some
        live = self.plugin.live_fields
        assert set(live) <= set(self.plugin.Options.model_fields) - {"name"}, live
        overrides = self.plugin.apply_live is not SolverPlugin.apply_live
        assert bool(live) == overrides, "declare live_fields exactly when apply_live is overridden"

    def test_latest_checkpoint_never_raises_and_a_missing_run_has_none(self, tmp_path):
        # (an empty run directory may still count: a plain command decides itself what to continue from)
        answer = self.instance().latest_checkpoint(tmp_path)
        assert answer is None or (isinstance(answer, str) and answer)
        assert self.instance().latest_checkpoint(tmp_path / "never-launched") is None
