"""An unknown field in a spec or an edit names the field the user likely meant."""

from __future__ import annotations

import copy

import pytest
import yaml

from orchestrator.engine.edits import apply_assignments, parse_assignments
from orchestrator.model.errors import SpecError
from orchestrator.model.spec import spec_for_store, validate_spec

SPEC = yaml.safe_load("""
name: pitz
solver: {name: openfoam, application: simpleFoam, case: /nonexistent/pitzDaily, parameters: {writeInterval: 50}}
cluster: {backend: local, nodes: 2, cores_per_node: 1}
limits: {walltime: 1h}
""")


def problem(data, source: str = "spec") -> tuple[str, str]:
    with pytest.raises(SpecError) as info:
        validate_spec(data, check_paths=False, source=source)
    assert len(info.value.problems) == 1, info.value.problems
    return info.value.problems[0]


def stored() -> dict:
    """The spec as the store keeps it (every default filled in), as `e2e edit` starts from."""
    return spec_for_store(validate_spec(copy.deepcopy(SPEC), check_paths=False))


def edit_problem(*sets: str) -> tuple[str, str]:
    return problem(apply_assignments(stored(), parse_assignments(list(sets))), source="edit")


def with_change(path: str, value=None, rename: str | None = None) -> dict:
    data = copy.deepcopy(SPEC)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    if rename:
        node[rename] = node.pop(last)
    else:
        node[last] = value
    return data


def test_a_misspelled_top_level_key_suggests_the_real_one():
    field, message = problem(with_change("cluster", rename="clustr"))
    assert field == "clustr"
    assert message.startswith("unknown field; did you mean cluster?")
    assert "Allowed fields: cluster, description" in message


def test_a_misspelled_nested_key_suggests_the_one_at_its_level():
    field, message = problem(with_change("limits.walltime", rename="walltme"))
    assert field == "limits.walltme" and "did you mean limits.walltime?" in message


def test_a_misspelled_solver_option_suggests_the_plugins_option():
    data = copy.deepcopy(SPEC)
    data["solver"] = {"name": "command", "command": ["true"], "inputz": []}
    field, message = problem(data)
    assert field == "solver.inputz" and "did you mean solver.inputs?" in message


def test_nothing_close_still_lists_the_allowed_fields():
    field, message = problem(with_change("cluster.zzzzzz", 1))
    assert message == "unknown field; allowed fields: backend, cores_per_node, nodes, restart_on_node_failure"


def test_edit_of_a_solver_parameter_without_its_section_points_to_it():
    # `e2e edit JOB --set endTime=70`: endTime is a controlDict entry, under solver.parameters
    field, message = edit_problem("endTime=70")
    assert field == "solver.endTime"
    assert message.startswith("unknown field; did you mean solver.parameters.endTime")
    assert "controlDict" in message  # the map's own description says what goes in it


def test_edit_finds_a_field_of_that_exact_name_deeper_in_the_spec():
    field, message = edit_problem("writeInterval=70")
    assert field == "solver.writeInterval" and "did you mean solver.parameters.writeInterval?" in message


def test_edit_finds_a_field_of_that_exact_name_in_another_section():
    field, message = edit_problem("walltime=2h")
    assert field == "solver.walltime" and "did you mean limits.walltime?" in message


def test_edit_with_a_misspelled_section_suggests_the_section():
    field, message = edit_problem("limits.idle_shutdwn=10m")
    assert "did you mean limits.idle_shutdown?" in message
    field, message = edit_problem("desktp.enabled=false")  # not a top-level name: taken as a solver option
    assert field == "solver.desktp" and "did you mean desktop?" in message


def test_the_suggested_edit_is_valid():
    new = validate_spec(apply_assignments(stored(), parse_assignments(["solver.parameters.endTime=70"])),
                        check_paths=False)
    assert new.solver.parameters["endTime"] == 70
