"""The pool's lease indexes (free nodes by inventory position, each job's nodes) on fakeredis with real Lua: a lease
takes the first free nodes in inventory order, and the indexes follow releases, inventory changes, drains,
replacements and pools leased before they existed."""

from __future__ import annotations

from orchestrator.model.states import JobState

INVENTORY = ["n1", "n2", "n3", "n4"]


def queued(store, name: str, nodes: int = 1) -> str:
    return store.create_job(name=name, owner="alice", spec={"name": name, "cluster": {"nodes": nodes}},
                            backend="local", solver="command")


def lease(store, name: str, nodes: int = 1, inventory: list[str] = INVENTORY) -> tuple[str, list[str] | str]:
    job_id = queued(store, name, nodes)
    return job_id, store.allocate("local", job_id, nodes, inventory)


def test_leases_take_the_first_free_nodes_in_inventory_order_and_a_freed_node_comes_back_first(store):
    a, got_a = lease(store, "a", 2)
    b, got_b = lease(store, "b", 1)
    assert (got_a, got_b) == (["n1", "n2"], ["n3"])
    assert store.release("local", a) == 2
    c, got_c = lease(store, "c", 3)
    assert got_c == ["n1", "n2", "n4"]
    assert store.leases("local") == {"n1": c, "n2": c, "n3": b, "n4": c}
    _, got_d = lease(store, "d", 1)
    assert got_d == "nodes"


def test_a_repeated_lease_returns_the_same_nodes_and_the_inventory_is_indexed_once(store, monkeypatch):
    job_id, first = lease(store, "a", 2)
    calls = []
    sync = store._sync_pool
    monkeypatch.setattr(store, "_sync_pool", lambda **kw: calls.append(kw) or sync(**kw))
    assert store.allocate("local", job_id, 2, INVENTORY) == first
    _, other = lease(store, "b", 1)
    assert other == ["n3"] and calls == []   # the inventory did not change: no rebuild


def test_a_node_gone_from_the_inventory_is_never_leased_again_and_a_new_one_is(store):
    a, _ = lease(store, "a", 1)                   # holds n1
    smaller = ["n1", "n3", "n5"]                  # n2 and n4 went, n5 came
    b, got_b = lease(store, "b", 3, smaller)
    assert got_b == "nodes"                       # n1 is a's: two free nodes only
    store.release("local", b)                     # (it gives up: off the queue)
    store.release("local", a)                     # n1 comes back: it is still in the inventory
    _, got_c = lease(store, "c", 3, smaller)
    assert got_c == ["n1", "n3", "n5"]
    _, got_d = lease(store, "d", 1, smaller)
    assert got_d == "nodes"                       # n2 and n4 are not offered, though free in the pool hash


def test_a_drained_node_is_skipped_until_undrained(store):
    store.drain("local", "n1", {"reason": "fan"})
    a, got_a = lease(store, "a", 1)
    assert got_a == ["n2"]
    store.release("local", a)
    _, got_b = lease(store, "b", 1)
    assert got_b == ["n2"]                        # released, not drained: first again; n1 still skipped
    assert store.undrain("local", "n1") == {"reason": "fan"}
    _, got_c = lease(store, "c", 1)
    assert got_c == ["n1"]


def test_a_replacement_is_released_with_the_job_and_the_dead_node_stays_drained(store):
    a, got_a = lease(store, "a", 2)               # n1, n2
    assert store.transition_job(a, JobState.PROVISIONING, nodes=got_a)
    swaps = store.replace_nodes("local", a, ["n1"], INVENTORY, {"reason": "silent"})
    assert swaps == {"n1": "n3"}
    _, got_b = lease(store, "b", 1)
    assert got_b == ["n4"]
    assert store.release("local", a) == 2         # n2 and n3
    c, got_c = lease(store, "c", 3)
    assert got_c == "nodes"                       # n1 is drained: n2 and n3 only
    store.release("local", c)
    store.undrain("local", "n1")
    _, got_d = lease(store, "d", 3)
    assert got_d == ["n1", "n2", "n3"]


def test_leases_made_before_the_indexes_existed_are_kept_and_freed(store):
    a, got_a = lease(store, "a", 2)
    # a pool as an older engine left it: the pool hash only
    for key in store._indexes("local"):
        store._r.delete(key)
    assert store.allocate("local", a, 2, INVENTORY) == got_a    # the job's own nodes, found by the rebuild
    _, got_b = lease(store, "b", 2)
    assert got_b == ["n3", "n4"]
    for key in store._indexes("local"):
        store._r.delete(key)
    assert store.release("local", a) == 2         # found by a scan of the pool hash
    _, got_c = lease(store, "c", 2)
    assert got_c == ["n1", "n2"]
