"""Parameter sweeps without an engine: expansion, validation of every member, nothing created on error."""

from __future__ import annotations

import pytest
import yaml

from orchestrator.control.client import Client
from orchestrator.control.sweeps import (
    expand,
    member_rows,
    parse_sweep_options,
    plan_from_file,
    resolve_sweep,
    sweep_block,
)
from orchestrator.model.errors import NotFound, SpecError
from orchestrator.model.settings import Settings

BASE = {"name": "scan", "cluster": {"nodes": 1},
        "solver": {"name": "command", "command": ["sh", "-c", "echo $A"], "env": {"A": "x"}}}


def test_sweep_options_read_values_like_edit_set_and_default_to_solver_options():
    axes = parse_sweep_options(["env.A=1,two,\"3\"", "cluster.cores_per_node=1,2"])
    assert axes == {"solver.env.A": [1, "two", "3"], "cluster.cores_per_node": [1, 2]}


@pytest.mark.parametrize("item, field, says", [
    ("env.A", "--sweep", "KEY=v1,v2"), ("env.A=", "--sweep", "KEY=v1,v2"), ("a..b=1", "--sweep", "dotted key"),
    ("name=a,b", "name", "cannot be swept"), ("solver.name=command", "solver.name", "cannot be swept"),
])
def test_bad_sweep_options_are_refused_by_field(item, field, says):
    with pytest.raises(SpecError) as err:
        parse_sweep_options([item])
    assert err.value.problems[0][0] == field and says in err.value.problems[0][1]


def test_a_key_swept_twice_is_refused():
    with pytest.raises(SpecError, match="swept twice"):
        parse_sweep_options(["env.A=1", "solver.env.A=2"])


def test_the_cartesian_product_in_order_each_member_named_and_validated():
    plan = expand(BASE, {"solver.env.A": ["a", "b", "c"], "cluster.cores_per_node": [1, 2]})
    assert [m.index for m in plan.members] == [1, 2, 3, 4, 5, 6]
    assert [m.spec.name for m in plan.members] == [f"scan-{i}" for i in range(1, 7)]
    assert [m.values for m in plan.members][:3] == [{"solver.env.A": "a", "cluster.cores_per_node": 1},
                                                     {"solver.env.A": "a", "cluster.cores_per_node": 2},
                                                     {"solver.env.A": "b", "cluster.cores_per_node": 1}]
    assert [(m.spec.solver.env["A"], m.spec.cluster.cores_per_node) for m in plan.members][-1] == ("c", 2)
    assert BASE["solver"]["env"] == {"A": "x"}  # the base spec is not changed


def test_one_bad_value_names_its_key_and_value():
    with pytest.raises(SpecError) as err:
        expand(BASE, {"cluster.nodes": [1, 0, 2]})
    assert err.value.problems == [("cluster.nodes", "Input should be greater than or equal to 1 (value 0)")]


def test_a_spec_sweep_block_and_options_combine_and_options_win(tmp_path):
    path = tmp_path / "scan.yaml"
    path.write_text(yaml.safe_dump({**BASE, "sweep": {"env.A": ["p", "q"], "cluster.cores_per_node": [1, 2]}}))
    plan = plan_from_file(path, ["cluster.cores_per_node=3"])
    assert plan.axes == {"solver.env.A": ["p", "q"], "cluster.cores_per_node": [3]}
    assert len(plan.members) == 2
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(BASE))
    assert plan_from_file(plain, []) is None


@pytest.mark.parametrize("block", [[1, 2], {}, {"env.A": []}, {"env.A": 3}])
def test_a_malformed_sweep_block_is_refused(block):
    with pytest.raises(SpecError):
        sweep_block(block)


def test_nothing_is_created_when_a_member_does_not_fit_the_backend(store, tmp_path):
    client = Client(Settings(home=tmp_path, local_nodes=2), store=store, user="alice")
    plan = expand(BASE, {"cluster.nodes": [1, 2, 3]})  # valid specs, but the backend has 2 nodes
    with pytest.raises(SpecError, match="cluster.nodes: 3 requested"):
        client.submit_sweep(plan)
    assert store.list_jobs() == [] and store.sweeps() == []


def test_members_share_a_sweep_id_and_report_their_values(store, tmp_path):
    sent = []
    client = Client(Settings(home=tmp_path, local_nodes=4), store=store, user="alice")
    client._celery = type("Celery", (), {"send_task": lambda self, name, args: sent.append((name, args))})()
    sweep_id, jobs = client.submit_sweep(expand(BASE, {"solver.env.A": ["a", "b", "c"]}))

    assert store.sweeps() == [sweep_id] and store.sweep_members(sweep_id) == jobs
    assert sent == [("e2e.provision", [jobs[0]])]   # the queue's head; each later member is kicked as the one
    #                                                 before it leases (tests/unit/test_queue_kick.py)
    assert store.queued_jobs() == jobs  # first in, first out
    rows = member_rows(store, sweep_id)
    assert [(r["index"], r["name"], r["values"], r["state"]) for r in rows] == [
        (i, f"scan-{i}", {"solver.env.A": v}, "QUEUED") for i, v in enumerate("abc", 1)]
    assert resolve_sweep(store, sweep_id[:5]) == sweep_id
    with pytest.raises(NotFound):
        resolve_sweep(store, "sw-nope")
    assert [doc.state.value for doc in client.terminate_sweep(sweep_id)[1]] == ["TERMINATING"] * 3


def test_members_end_with_their_run_unless_the_spec_says_otherwise():
    plan = expand(BASE, {"solver.env.A": ["a"]})
    limits = plan.members[0].spec.limits
    assert (limits.terminate_on_end, limits.idle_shutdown) == (True, None)
    own = expand({**BASE, "limits": {"walltime": "1h", "idle_shutdown": "5m"}}, {"solver.env.A": ["a"]})
    limits = own.members[0].spec.limits
    assert (limits.walltime, limits.idle_shutdown, limits.terminate_on_end) == (3600.0, 300.0, False)
    kept = expand({**BASE, "limits": {"terminate_on_end": False}}, {"solver.env.A": ["a"]})
    assert kept.members[0].spec.limits.terminate_on_end is False
    swept = expand(BASE, {"limits.idle_shutdown": ["1s", "2s"]})
    assert [m.spec.limits.idle_shutdown for m in swept.members] == [1.0, 2.0]
