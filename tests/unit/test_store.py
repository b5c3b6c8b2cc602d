"""JobStore on fakeredis (with real Lua): creation, CAS transitions, events, leases, lookups, races."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

import orchestrator.store.jobs as store_module
from orchestrator.model.errors import InvalidState, NotFound
from orchestrator.model.events import EventKind
from orchestrator.model.states import JOB_TRANSITIONS, RUN_TRANSITIONS, JobState, RunState
from solvers.base import Progress

INVENTORY = ["node-01", "node-02", "node-03"]


def new_job(store, name: str = "pitz") -> str:
    return store.create_job(name=name, owner="alice", spec={"name": name, "cluster": {"nodes": 1}},
                            backend="local", solver="command")


def kinds(events) -> list[EventKind]:
    return [e.kind for e in events]


# -- creation

def test_create_job_is_queued_with_a_pending_first_run_and_two_events(store):
    # When a job is created
    job_id = new_job(store, "first")

    # Then the job is QUEUED, version 1, with run-001 PENDING as its current run
    job = store.get_job(job_id)
    assert job.id == job_id
    assert job.state is JobState.QUEUED
    assert job.version == 1
    assert job.name == "first" and job.owner == "alice" and job.solver == "command"
    assert job.spec == {"name": "first", "cluster": {"nodes": 1}}  # JSON round trip
    assert job.nodes == []
    assert job.current_run == "run-001" and job.runs == 1
    run = store.get_run(job_id, "run-001")
    assert run.state is RunState.PENDING and run.job_id == job_id
    assert [r.id for r in store.list_runs(job_id)] == ["run-001"]

    # And exactly two events were recorded: the job's creation then the run's
    events = store.events(job_id)
    assert kinds(events) == [EventKind.JOB_CREATED, EventKind.RUN_CREATED]
    assert events[0].data["state"] == "QUEUED" and events[0].data["name"] == "first"
    assert events[1].data == {"run": "run-001", "state": "PENDING"}

    # And it is active and queued
    assert store.active_jobs() == [job_id]
    assert store.queued_jobs() == [job_id]


def test_jobs_queue_in_submission_order(store):
    ids = [new_job(store, f"j{i}") for i in range(4)]
    assert store.queued_jobs() == ids
    # what the hot paths read instead of the whole queue: its head, and which of a few jobs are queued
    assert store.queue_head() == ids[0]
    assert store.queued_among([ids[3], "nope", ids[1]]) == {ids[3], ids[1]} and store.queued_among([]) == set()
    store.release("local", ids[0])                        # (a lease or a terminate takes a job off the queue)
    assert store.queue_head() == ids[1] and store.queued_among([ids[0]]) == set()
    assert [j.id for j in store.list_jobs()] == list(reversed(ids))  # newest first


def test_create_job_retries_when_the_random_id_is_taken(store, monkeypatch):
    # Given an id generator that repeats itself once
    ids = iter(["aaaa0000", "aaaa0000", "bbbb0000"])
    monkeypatch.setattr(store_module, "secrets", SimpleNamespace(token_hex=lambda n: next(ids)))
    first = new_job(store)
    # When a second job draws the taken id first
    second = new_job(store)
    # Then it gets the next, free one and the first job is untouched
    assert (first, second) == ("aaaa0000", "bbbb0000")
    assert store.get_job(first).version == 1


def test_unknown_job_and_run_are_not_found(store):
    job_id = new_job(store)
    with pytest.raises(NotFound):
        store.get_job("deadbeef")
    with pytest.raises(NotFound):
        store.get_run(job_id, "run-009")
    with pytest.raises(NotFound):
        store.transition_job("deadbeef", JobState.PROVISIONING)


# -- compare-and-set transitions

def test_transition_from_an_allowed_state_bumps_version_and_sets_fields(store):
    job_id = new_job(store)
    before = store.get_job(job_id)

    ok = store.transition_job(job_id, JobState.PROVISIONING, expect=[JobState.QUEUED],
                              data={"nodes": ["node-01"]}, nodes=["node-01"])

    assert ok is True
    job = store.get_job(job_id)
    assert job.state is JobState.PROVISIONING
    assert job.version == before.version + 1
    assert job.nodes == ["node-01"]
    assert job.updated_at >= before.updated_at
    last = store.events(job_id)[-1]
    assert last.kind is EventKind.JOB_STATE
    assert last.data == {"state": "PROVISIONING", "nodes": ["node-01"]}


def test_transition_from_a_wrong_state_changes_nothing(store):
    # Given a job that already moved to PROVISIONING
    job_id = new_job(store)
    assert store.transition_job(job_id, JobState.PROVISIONING)
    before = store.get_job(job_id)
    events_before = store.events(job_id)

    # When someone else tries the same move again (expecting QUEUED)
    ok = store.transition_job(job_id, JobState.PROVISIONING, expect=[JobState.QUEUED], nodes=["x"])

    # Then it is refused, and neither state, version, fields nor events changed
    assert ok is False
    after = store.get_job(job_id)
    assert after.state is JobState.PROVISIONING
    assert after.version == before.version
    assert after.nodes == before.nodes
    assert store.events(job_id) == events_before


def test_a_target_not_reachable_from_the_current_state_is_refused(store):
    # The table has no QUEUED -> TERMINATED edge (only via TERMINATING)
    assert JobState.TERMINATED not in JOB_TRANSITIONS[JobState.QUEUED]
    job_id = new_job(store)
    n_events = len(store.events(job_id))

    assert store.transition_job(job_id, JobState.TERMINATED) is False

    job = store.get_job(job_id)
    assert job.state is JobState.QUEUED and job.version == 1
    assert len(store.events(job_id)) == n_events
    assert job_id in store.active_jobs()


def test_an_expect_set_outside_the_table_is_an_invalid_state(store):
    # UP -> PROVISIONING is no edge of the table: asking for it is a programming error, not a lost race
    job_id = new_job(store)
    with pytest.raises(InvalidState):
        store.transition_job(job_id, JobState.PROVISIONING, expect=[JobState.UP])
    with pytest.raises(InvalidState):
        store.transition_run(job_id, "run-001", RunState.PENDING, expect=[RunState.RUNNING])  # no such edge
    assert store.get_job(job_id).version == 1


JOB_PATH = [JobState.PROVISIONING, JobState.UP, JobState.TERMINATING, JobState.TERMINATED]
RUN_PATH = [RunState.LAUNCHING, RunState.RUNNING, RunState.STOPPING, RunState.STOPPED]


def test_every_successful_transition_appends_exactly_one_state_event(store):
    job_id = new_job(store)
    # Walk the run and the job along legal paths; each step is one event carrying the new state
    for to in RUN_PATH:
        before = store.events(job_id)
        assert store.transition_run(job_id, "run-001", to)
        new = store.events(job_id, after=before[-1].id)
        assert kinds(new) == [EventKind.RUN_STATE]
        assert new[0].data == {"state": to.value, "run": "run-001"}
        assert store.get_run(job_id, "run-001").state is to
    for to in JOB_PATH:
        before = store.events(job_id)
        assert store.transition_job(job_id, to)
        new = store.events(job_id, after=before[-1].id)
        assert kinds(new) == [EventKind.JOB_STATE]
        assert new[0].data["state"] == to.value
        assert store.get_job(job_id).state is to
    assert store.get_job(job_id).version == 1 + len(JOB_PATH)
    assert store.get_run(job_id, "run-001").version == 1 + len(RUN_PATH)


def test_run_transitions_refuse_a_wrong_state_without_side_effects(store):
    job_id = new_job(store)
    assert RunState.RUNNING not in RUN_TRANSITIONS[RunState.PENDING]
    events = store.events(job_id)
    assert store.transition_run(job_id, "run-001", RunState.RUNNING, pid=123) is False
    run = store.get_run(job_id, "run-001")
    assert run.state is RunState.PENDING and run.version == 1 and run.pid is None
    assert store.events(job_id) == events


def test_terminal_job_state_removes_the_job_from_active_jobs(store):
    job_id, other = new_job(store), new_job(store)
    assert store.transition_job(job_id, JobState.TERMINATING)
    assert set(store.active_jobs()) == {job_id, other}  # TERMINATING is still active
    assert store.transition_job(job_id, JobState.TERMINATED)
    assert store.active_jobs() == [other]
    assert job_id in [j.id for j in store.list_jobs()]  # but still listed


def test_update_job_and_run_refuse_state_and_version(store):
    job_id = new_job(store)
    for bad in ({"state": JobState.UP}, {"version": 7}):
        with pytest.raises(ValueError):
            store.update_job(job_id, **bad)
        with pytest.raises(ValueError):
            store.update_run(job_id, "run-001", **bad)
    assert store.get_job(job_id).state is JobState.QUEUED
    assert store.get_job(job_id).version == 1

    store.update_job(job_id, results="/tmp/r", nodes=["a", "b"])
    store.update_run(job_id, "run-001", pid=4242, log_file="log.x")
    assert store.get_job(job_id).nodes == ["a", "b"]
    assert store.get_job(job_id).results == "/tmp/r"
    run = store.get_run(job_id, "run-001")
    assert run.pid == 4242 and run.log_file == "log.x"


# -- events

def test_events_replay_from_any_id(store):
    job_id = new_job(store)
    store.transition_job(job_id, JobState.PROVISIONING)
    for i in range(3):
        store.append_event(job_id, EventKind.WARNING, {"i": i})
    everything = store.events(job_id)
    ids = [e.id for e in everything]
    assert len(ids) == 6 and len(set(ids)) == 6
    for i, event_id in enumerate(ids):
        assert [e.id for e in store.events(job_id, after=event_id)] == ids[i + 1:]
    assert store.events(job_id, after="0-0") == everything
    assert [e.data for e in store.events(job_id, after=ids[2])][-3:] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert len(store.events(job_id, count=2)) == 2


def test_blocking_events_wake_up_on_an_event_from_another_thread(store, make_store):
    job_id = new_job(store)
    last = store.events(job_id)[-1].id
    writer = make_store()

    def append_later():
        time.sleep(0.2)
        writer.append_event(job_id, EventKind.CONTROL, {"action": "terminate"})

    thread = threading.Thread(target=append_later)
    started = time.monotonic()
    thread.start()
    got = store.events(job_id, after=last, block_ms=5000)
    waited = time.monotonic() - started
    thread.join()

    assert kinds(got) == [EventKind.CONTROL]
    assert got[0].data == {"action": "terminate"}
    assert 0.1 < waited < 4.0  # it did block, and it returned on the event rather than at the timeout


def test_blocking_events_time_out_empty(store):
    job_id = new_job(store)
    last = store.events(job_id)[-1].id
    started = time.monotonic()
    assert store.events(job_id, after=last, block_ms=100) == []
    assert time.monotonic() - started >= 0.09


def test_record_progress_stores_it_and_appends_a_progress_event(store):
    job_id = new_job(store)
    progress = Progress(step=30, total=120, residuals={"p": 0.02, "Ux": 0.001}, solver_time=4.5)

    store.record_progress(job_id, "run-001", progress, log_offset=2048)

    run = store.get_run(job_id, "run-001")
    assert run.progress == progress
    assert run.log_offset == 2048
    event = store.events(job_id)[-1]
    assert event.kind is EventKind.PROGRESS
    assert event.data["run"] == "run-001"
    assert event.data["step"] == 30 and event.data["total"] == 120
    assert event.data["residuals"] == {"p": 0.02, "Ux": 0.001}
    assert event.data["fraction"] == pytest.approx(30 / 120)


# -- node leases

def test_allocate_serves_only_the_head_of_the_queue(store):
    first, second = new_job(store, "first"), new_job(store, "second")
    # The second job may not jump the queue, even though nodes are free
    assert store.allocate("local", second, 1, INVENTORY) == "queued"
    assert set(store.leases("local").values()) == {""}
    # The head asking for more than exist gets "nodes" and leases nothing
    assert store.allocate("local", first, len(INVENTORY) + 1, INVENTORY) == "nodes"
    assert set(store.leases("local").values()) == {""}
    assert store.queued_jobs() == [first, second]

    leased = store.allocate("local", first, 2, INVENTORY)

    assert isinstance(leased, list) and len(leased) == 2 and set(leased) <= set(INVENTORY)
    assert {n for n, owner in store.leases("local").items() if owner == first} == set(leased)
    assert store.queued_jobs() == [second]


def test_allocate_is_idempotent_for_a_job_holding_nodes(store):
    job_id = new_job(store)
    leased = store.allocate("local", job_id, 2, INVENTORY)
    again = store.allocate("local", job_id, 2, INVENTORY)
    assert sorted(again) == sorted(leased)
    assert sum(owner == job_id for owner in store.leases("local").values()) == 2


def test_allocate_reports_nodes_when_the_pool_is_busy_and_release_frees_them(store):
    first, second = new_job(store), new_job(store)
    assert len(store.allocate("local", first, 2, INVENTORY)) == 2
    # The second is now the head, but only one node is free
    assert store.allocate("local", second, 2, INVENTORY) == "nodes"
    assert store.queued_jobs() == [second]

    assert store.release("local", first) == 2

    assert all(owner != first for owner in store.leases("local").values())
    leased = store.allocate("local", second, 2, INVENTORY)
    assert isinstance(leased, list) and len(leased) == 2
    assert store.release("local", first) == 0  # releasing twice frees nothing more


def test_release_takes_a_queued_job_off_the_queue(store):
    first, second = new_job(store), new_job(store)
    assert store.release("local", first) == 0
    assert store.queued_jobs() == [second]
    assert store.allocate("local", second, 1, INVENTORY) != "queued"


# -- lookups

def test_find_job_resolves_unique_prefixes(store, monkeypatch):
    ids = iter(["abcd0001", "abcd0002", "ef012345"])
    monkeypatch.setattr(store_module, "secrets", SimpleNamespace(token_hex=lambda n: next(ids)))
    a1, a2, e = new_job(store), new_job(store), new_job(store)

    assert store.find_job("abcd0001") == a1
    assert store.find_job("abcd0002") == a2
    assert store.find_job("ef") == e

    with pytest.raises(NotFound) as ambiguous:
        store.find_job("abcd")
    assert "2 jobs" in ambiguous.value.message
    assert a1 in ambiguous.value.message and a2 in ambiguous.value.message
    for missing in ("zz", "abcd0003", ""):
        with pytest.raises(NotFound):
            store.find_job(missing)


# -- races

def test_only_one_of_twenty_racing_transitions_wins(make_store):
    # Given one QUEUED job and 20 workers, each with its own connection to the same server
    job_id = new_job(make_store())
    stores = [make_store() for _ in range(20)]
    barrier = threading.Barrier(len(stores))
    results: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def race(s, i):
        try:
            barrier.wait()
            ok = s.transition_job(job_id, JobState.PROVISIONING, expect=[JobState.QUEUED], error=str(i))
            with lock:
                results.append(ok)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(s, i)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    # Then exactly one wins, the version moved once, and one state event was appended
    assert not errors
    assert len(results) == 20 and results.count(True) == 1
    job = make_store().get_job(job_id)
    assert job.state is JobState.PROVISIONING
    assert job.version == 2
    assert job.error in {str(i) for i in range(20)}
    assert kinds(make_store().events(job_id)).count(EventKind.JOB_STATE) == 1


def test_a_job_field_changed_by_racing_workers_is_reported_by_one(store):
    job_id = new_job(store)
    assert store.change_job_field(job_id, "collect_error", "disk full") is True
    assert store.change_job_field(job_id, "collect_error", "disk full") is False  # the second worker: said already
    assert store.get_job(job_id).collect_error == "disk full"
    assert store.change_job_field(job_id, "collect_error", "quota") is True      # a new cause is said again
    assert store.change_job_field("nosuchjob", "collect_error", "x") is False
    assert not store._r.exists(store._keys.job("nosuchjob"))
