"""The nodes every face shows are the engine's: what its workers published, not what the caller's own settings
describe (a CLI without E2E_LOCAL_NODES once showed 4 nodes while the worker leased 300)."""

from __future__ import annotations

import pytest

from orchestrator.control.service import ControlService
from orchestrator.engine.nodes_admin import publish_inventories
from orchestrator.model.errors import UserError
from orchestrator.model.settings import Settings
from orchestrator.model.states import NodeState


def test_the_cli_shows_and_drains_the_engines_nodes_not_its_own_settings(store, tmp_path):
    engine = Settings(home=tmp_path / "engine", local_nodes=7)
    caller = ControlService(Settings(home=tmp_path / "cli", local_nodes=2), store=store, admin=True)
    before = caller.nodes()
    assert len(before) == 2   # nothing published yet: the caller's own settings, as before
    assert publish_inventories(store, engine) == {"local": 7}
    names = [f"node-{i:02d}" for i in range(1, 8)]
    job_id = store.create_job(name="sim", owner="alice", backend="local", solver="command",
                              spec={"name": "sim", "solver": {"name": "command", "command": ["true"]}})
    leased = store.allocate("local", job_id, 1, names)
    rows = caller.nodes()
    assert [r["name"] for r in rows] == names
    assert {r["name"]: r["state"] for r in rows if r["state"] is not NodeState.FREE} == {leased[0]: NodeState.LEASED}
    assert all(r["reachable"] and r["cores"] == engine.local_cores_per_node and r["seen_at"] for r in rows)
    caller.drain("node-07", "disk")                       # a node only the engine knows can be drained
    assert store.drained("local")["node-07"]["reason"] == "disk"
    assert caller.nodes()[-1]["state"] is NodeState.DRAINED
    with pytest.raises(UserError, match="not in the local inventory"):
        caller.drain("node-08", "")


def test_the_default_backend_is_the_engines(store, tmp_path):
    inventory = tmp_path / "inv.yaml"
    inventory.write_text("head: {name: head, address: 10.0.0.1}\n"
                         "nodes: [{name: n1, address: 10.0.0.11, key_file: /k, cores: 4}]\n")
    engine = Settings(home=tmp_path / "engine", inventory=inventory)
    store.publish_inventory("local", {"at": 1.0, "default": "ssh", "nodes": []})
    store.publish_inventory("ssh", {"at": 1.0, "default": "ssh", "nodes": [
        {"name": "n1", "address": "10.0.0.11", "cores": 4, "load": None, "reachable": False, "problem": "down"}]})
    caller = ControlService(Settings(home=tmp_path / "cli"), store=store, admin=True)
    assert engine.inventory and caller.settings.inventory is None
    assert [(r["name"], r["reachable"], r["problem"]) for r in caller.nodes()] == [("n1", False, "down")]
