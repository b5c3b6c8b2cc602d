"""Expected starts of queued jobs: the FIFO queue replayed against when each node is expected to be free."""

from __future__ import annotations

import time

from orchestrator.control.service import ControlService
from orchestrator.engine.forecast import Holder, Waiting, forecast
from orchestrator.model.settings import Settings
from orchestrator.model.states import JobState

NOW = 1_000_000.0


def test_jobs_start_in_order_as_nodes_free_and_take_the_earliest_released():
    pools = {"local": [None, "r1", "r2", "r3"]}          # one node free now; three held
    holders = {"r1": Holder("r1", NOW + 100), "r2": Holder("r2", NOW + 50), "r3": Holder("r3", NOW + 300)}
    queue = [Waiting("a", "local", 1, 60), Waiting("b", "local", 2, 30), Waiting("c", "local", 1, None),
             Waiting("d", "local", 2, 10)]
    out = forecast(queue, pools, holders, NOW)
    assert [(out[j].position, out[j].starts_at) for j in "abcd"] == [
        (1, NOW), (2, NOW + 60), (3, NOW + 90), (4, NOW + 100)]
    # a: the free node (a ends at +60); b: the two earliest, r2's (+50) and a's (+60), and ends at +90;
    # c: one of b's at +90 (no walltime: never released); d: the other of b's (+90) and r1's (+100)
    assert out["a"].why == "nodes are free" and out["b"].why == "until job a ends"


def test_no_estimate_behind_a_job_without_walltime_and_a_job_that_never_fits():
    pools = {"local": ["r1", "r2"], "ssh": [None]}
    holders = {"r1": Holder("r1", None), "r2": Holder("r2", NOW + 20)}
    queue = [Waiting("a", "local", 1, 5), Waiting("b", "local", 2, 5), Waiting("c", "ssh", 1, 5)]
    out = forecast(queue, pools, holders, NOW)
    assert out["a"].starts_at == NOW + 20
    assert out["b"].starts_at is None and "job r1" in out["b"].why and "no walltime" in out["b"].why
    assert out["c"].starts_at is None and "waits behind b" in out["c"].why   # one queue for all backends
    huge = forecast([Waiting("x", "ssh", 3, 5), Waiting("y", "ssh", 1, 5)], pools, holders, NOW)
    assert huge["x"].starts_at is None and "needs 3 ssh nodes; 1 are in service" in huge["x"].why
    assert huge["y"].starts_at is None and huge["y"].position == 2
    unlisted = forecast([Waiting("z", "slurm", 1, 5)], pools, holders, NOW)
    assert unlisted["z"].starts_at is None and "not listed its slurm nodes yet" in unlisted["z"].why


def test_status_and_listing_show_a_queued_jobs_place_from_the_store(store, tmp_path):
    settings = Settings(home=tmp_path, redis_url="redis://x/0", local_nodes=2)
    celery = type("C", (), {"send_task": lambda *a, **k: None})()
    control = ControlService(settings, store=store, celery=celery)
    spec = {"desktop": {"enabled": False}, "solver": {"name": "command", "command": ["true"]}}
    running = control.submit_data({**spec, "name": "running", "limits": {"walltime": "1h"},
                                   "cluster": {"nodes": 2}})
    store.publish_inventory("local", {"at": time.time(), "default": "local", "nodes": [
        {"name": "node-01"}, {"name": "node-02"}]})
    assert store.allocate("local", running, 2, ["node-01", "node-02"]) == ["node-01", "node-02"]
    store.transition_job(running, JobState.PROVISIONING, nodes=["node-01", "node-02"])
    store.transition_job(running, JobState.UP, up_at=time.time())
    waiting = control.submit_data({**spec, "name": "waiting"})
    place = control.status(waiting).queue
    assert place is not None and place.position == 1 and place.why == f"until job {running} ends"
    assert abs(place.expected_start - (time.time() + 3600)) < 5
    assert control.status(running).queue is None
    listed = {row.id: row.queue for row in control.overview()}
    assert listed[waiting] == place and listed[running] is None


def test_slurms_expected_start_is_read_from_squeue_start():
    from orchestrator.cluster.slurm import parse_start

    assert parse_start("2026-12-07T05:00:00\n") == time.mktime((2026, 12, 7, 5, 0, 0, 0, 0, -1))
    assert parse_start("N/A") is None and parse_start("Unknown") is None and parse_start("") is None
