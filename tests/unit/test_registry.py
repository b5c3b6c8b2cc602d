"""The solver plugin registry and the spec model built from it."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ValidationError

from orchestrator.model.errors import PluginError, UserError
from orchestrator.model.spec import build_spec_model
from solvers.base import Outcome, Prepared, Registry, SolverOptions, SolverPlugin, registry
from solvers.command import Command
from solvers.openfoam import OpenFOAM


class EchoOptions(SolverOptions):
    name: Literal["echo"]
    text: str = "hello"
    repeat: int = 1


class Echo(SolverPlugin):
    name = "echo"
    Options = EchoOptions

    def prepare(self, options, ctx):
        return Prepared(template="command/run.sh.j2", context={"command": ["echo", options.text]}, log_file="out")

    def parse_progress(self, text, last):
        return None


class ShoutOptions(SolverOptions):
    name: Literal["shout"]
    volume: int = 11


class Shout(Echo):
    name = "shout"
    Options = ShoutOptions


class AnotherEcho(Echo):
    """A second plugin claiming the name 'echo'."""


class NotOptions(BaseModel):
    name: Literal["bad"]


class BadOptions(Echo):
    name = "bad"
    Options = NotOptions


class Nameless(Echo):
    name = ""


def test_from_classes_builds_instances_sorted_by_name():
    reg = Registry.from_classes([Shout, Echo])
    assert reg.names() == ["echo", "shout"]
    assert isinstance(reg.get("echo"), Echo) and isinstance(reg.get("shout"), Shout)
    assert [p.name for p in reg] == ["echo", "shout"]
    assert reg.broken == {}


def test_duplicate_names_are_rejected():
    with pytest.raises(PluginError) as info:
        Registry.from_classes([Echo, AnotherEcho])
    assert "'echo'" in info.value.message


@pytest.mark.parametrize("plugin_cls", [BadOptions, type("NoOptions", (Echo,), {"name": "x", "Options": None}),
                                        type("InstanceOptions", (Echo,), {"name": "y",
                                                                          "Options": EchoOptions(name="echo")})])
def test_options_must_be_a_solver_options_subclass(plugin_cls):
    with pytest.raises(PluginError) as info:
        Registry.from_classes([plugin_cls])
    assert "SolverOptions" in info.value.message


def test_a_plugin_needs_a_name():
    with pytest.raises(PluginError):
        Registry.from_classes([Nameless])


def test_get_unknown_lists_known_solvers():
    reg = Registry.from_classes([Echo, Shout])
    with pytest.raises(UserError) as info:
        reg.get("fluent")
    assert "'fluent'" in info.value.message
    assert "echo, shout" in info.value.message
    with pytest.raises(UserError) as empty:
        Registry({}).get("x")
    assert "none" in empty.value.message


def test_installed_registry_has_openfoam_and_command():
    reg = registry()
    assert {"openfoam", "command"} <= set(reg.names())
    assert isinstance(reg.get("openfoam"), OpenFOAM)
    assert isinstance(reg.get("command"), Command)
    assert "openfoam" not in reg.broken and "command" not in reg.broken
    assert registry() is reg  # process-wide, loaded once


def test_entry_points_load_the_same_plugins_as_the_classes():
    fresh = Registry.from_entry_points()
    assert {"openfoam", "command"} <= set(fresh.names())
    assert type(fresh.get("openfoam")) is OpenFOAM


def test_default_judge_exit_and_request_stop():
    plugin = Echo()
    assert plugin.judge_exit(0, "") == Outcome(True, "exit code 0")
    assert plugin.judge_exit(3, "") == Outcome(False, "exit code 3")
    assert plugin.request_stop(object()) is False


def test_build_spec_model_with_one_plugin_validates():
    model = build_spec_model(Registry.from_classes([Echo]))

    spec = model.model_validate({"name": "e", "solver": {"name": "echo", "text": "hi", "repeat": 2}})

    assert isinstance(spec.solver, EchoOptions)
    assert (spec.solver.text, spec.solver.repeat) == ("hi", 2)
    assert spec.cluster.nodes == 1
    with pytest.raises(ValidationError):
        model.model_validate({"name": "e", "solver": {"name": "openfoam", "application": "simpleFoam"}})
    with pytest.raises(ValidationError):
        model.model_validate({"name": "e", "solver": {"name": "echo", "volume": 3}})  # extra field


def test_build_spec_model_with_two_plugins_discriminates_on_name():
    model = build_spec_model(Registry.from_classes([Echo, Shout]))
    assert isinstance(model.model_validate({"name": "a", "solver": {"name": "shout"}}).solver, ShoutOptions)
    assert isinstance(model.model_validate({"name": "a", "solver": {"name": "echo"}}).solver, EchoOptions)
    with pytest.raises(ValidationError) as info:
        model.model_validate({"name": "a", "solver": {"name": "whisper"}})
    assert info.value.errors()[0]["type"] == "union_tag_invalid"


def test_build_spec_model_without_plugins_still_requires_a_solver():
    model = build_spec_model(Registry({}))
    assert model.model_validate({"name": "a", "solver": {"name": "anything"}}).solver.name == "anything"
    with pytest.raises(ValidationError):
        model.model_validate({"name": "a"})
