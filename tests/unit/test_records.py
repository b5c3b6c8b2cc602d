"""The store's codec: every record type survives encode -> Redis hash strings -> decode, None and empty fields
and enums included; the records services publish on the job keep the JSON they had as dicts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from orchestrator.model.records import Attempt, DesktopRecord, Job, Run, Signals, StopIntent, SyncRecord
from orchestrator.model.states import DesktopState, JobState, RunState, SyncState
from orchestrator.store.codec import decode, encode
from solvers.base import Progress, RunMode


def through_redis(store, model: type[BaseModel], record: BaseModel, key: str = "rec") -> tuple[dict[str, str], Any]:
    """Write a record's fields as a Redis hash, read the hash back: (the stored strings, the decoded record)."""
    fields = {name: getattr(record, name) for name in type(record).model_fields}
    store._r.delete(key)
    store._r.hset(key, mapping=encode(fields))
    raw = store._r.hgetall(key)
    assert all(isinstance(v, str) for v in raw.values())
    return raw, decode(model, raw)


def full_job() -> Job:
    return Job(
        id="ab12cd34", name="pitz", owner="alice", state=JobState.UP, version=7,
        spec={"name": "pitz", "cluster": {"nodes": 2}, "solver": {"name": "openfoam"}}, backend="ssh",
        solver="openfoam", created_at=1.5, updated_at=2.25, runs=2, current_run="run-002",
        nodes=["node-01", "node-02"], seq=41, revision=3, sweep="sw1", sweep_index=4,
        sweep_values={"solver.parameters.endTime": 0.5}, up_at=3.0, error="boom", terminate_requested_at=4.0,
        terminated_by="walltime", results="/r/ab12cd34", collect_error="disk full", walltime_warned_at=5.0,
        idle_shutdown_warned_at=6.0, desktop_activity_at=7.0,
        desktop=DesktopRecord(state=DesktopState.READY, url="http://h:1/vnc.html", vnc_port=5901, web_port=6080,
                              display=":1", ssh=["e2e", "h", 22], access=["10.0.0.0/8"], firewall=True,
                              restarts=2, password_version=3, ready_at=8.0),
        sync=SyncRecord(state=SyncState.STARTED), ssh_keys="0123456789abcdef")


def test_a_job_with_every_field_set_round_trips(store):
    job = full_job()
    raw, back = through_redis(store, Job, job)
    assert back == job
    assert raw["state"] == "UP" and raw["nodes"] == '["node-01","node-02"]' and raw["seq"] == "41"
    assert back.desktop.state is DesktopState.READY and back.sync.state is SyncState.STARTED


def test_a_job_with_only_its_required_fields_reads_its_defaults(store):
    job = Job(id="j1", state=JobState.QUEUED)
    raw, back = through_redis(store, Job, job)
    assert back == job
    assert raw["sweep"] == "" and raw["desktop"] == "" and raw["nodes"] == "[]" and raw["spec"] == "{}"
    assert back.nodes == [] and back.spec == {} and back.sweep is None and back.desktop is None
    assert back.revision == 1 and back.current_run == "run-001"


def test_unknown_stored_fields_are_ignored(store):
    store._r.hset("j", mapping={"id": "j", "state": "PROVISIONING", "winner": "7"})
    job = decode(Job, store._r.hgetall("j"))
    assert job.state is JobState.PROVISIONING and not hasattr(job, "winner")
    assert "winner" not in job.model_dump()


def test_a_run_with_progress_and_past_attempts_round_trips(store):
    run = Run(
        id="run-002", job_id="j1", state=RunState.STOPPING, version=9, created_at=1.0, updated_at=2.0, attempt=3,
        revision=2, mode=RunMode.RESTART,
        past_attempts=[Attempt(attempt=1, started_at=10.0, ended_at=20.0),
                       Attempt(attempt=2, started_at=30.0, ended_at=None)],
        log_file="log.simpleFoam", log_offset=4096,
        progress=Progress(step=30, total=120, residuals={"p": 0.02, "Ux": 0.001}, solver_time=1.5, message="ok"),
        progress_total=120.0, node="node-01", info={"case": "pitz"}, launch_requested_at=3.0, pid=4242,
        started_at=4.0, ended_at=None, exit_code=0, reason="why", stop_intent=StopIntent.PAUSE,
        stop_requested_at=5.0, stop_sent_at=6.0, term_sent_at=7.0, kill_sent_at=8.0, signals=Signals.FROZEN,
        frozen_at=9.0, failed_nodes=["node-02"], recovery="no replacement node free")
    raw, back = through_redis(store, Run, run)
    assert back == run
    assert raw["stop_intent"] == "pause" and raw["signals"] == "frozen" and raw["mode"] == "restart"
    assert json.loads(raw["past_attempts"]) == [{"attempt": 1, "started_at": 10.0, "ended_at": 20.0},
                                                {"attempt": 2, "started_at": 30.0, "ended_at": None}]
    assert all(isinstance(a, Attempt) for a in back.past_attempts)
    assert isinstance(back.progress, Progress) and back.progress.fraction == pytest.approx(0.25)
    assert back.stop_intent is StopIntent.PAUSE and back.signals is Signals.FROZEN and back.mode is RunMode.RESTART


def test_a_new_run_leaves_its_optional_fields_unset(store):
    run = Run(id="run-001", state=RunState.PENDING)
    raw, back = through_redis(store, Run, run)
    assert back == run
    assert raw["pid"] == "" and raw["stop_intent"] == "" and raw["progress"] == "" and raw["past_attempts"] == "[]"
    assert back.pid is None and back.stop_intent is None and back.signals is None and back.progress is None
    assert back.past_attempts == [] and back.attempt == 1 and back.log_offset == 0


def test_a_cleared_field_reads_as_unset(store):
    """A restart clears the previous attempt's fields by writing None: stored as "", read as the default."""
    store._r.hset("r", mapping=encode({"id": "run-001", "state": RunState.RUNNING, "pid": 12,
                                      "signals": Signals.FROZEN}))
    store._r.hset("r", mapping=encode({"pid": None, "signals": None}))
    run = decode(Run, store._r.hgetall("r"))
    assert run.pid is None and run.signals is None


@pytest.mark.parametrize("attempt", [Attempt(attempt=2, started_at=1.0, ended_at=2.5), Attempt(),
                                     Attempt(attempt=1, started_at=1.0, ended_at=None)])
def test_an_attempt_round_trips(store, attempt):
    _, back = through_redis(store, Attempt, attempt)
    assert back == attempt
    # and as an item of a run's past_attempts (its stored form)
    assert decode(Run, {"id": "r", "state": "PAUSED",
                        **encode({"past_attempts": [attempt]})}).past_attempts == [attempt]


def test_the_desktop_record_stores_only_the_fields_it_was_given(store):
    rec = DesktopRecord(state=DesktopState.FAILED, reason="Xvnc is not installed", permanent=True, url=None)
    stored = encode({"desktop": rec})["desktop"]
    assert json.loads(stored) == {"state": "failed", "reason": "Xvnc is not installed", "permanent": True,
                                  "url": None}
    store._r.hset("j", mapping={"id": "j", "state": "UP", "desktop": stored})
    job = decode(Job, store._r.hgetall("j"))
    assert job.desktop == rec and job.desktop.state is DesktopState.FAILED
    assert job.desktop.vnc_port is None and job.desktop.restarts == 0  # unset: the defaults
    assert encode({"desktop": job.desktop})["desktop"] == stored       # decoded and stored again: the same JSON
    assert job.model_dump(mode="json")["desktop"] == json.loads(stored)  # and the same JSON in the API


def test_a_desktop_record_written_as_a_dict_reads_the_same(store):
    """Desktop records written before the model (plain dicts): same JSON, same record; unknown fields dropped."""
    old = {"state": "ready", "url": "http://h:1/vnc.html", "vnc_port": 5901, "ssh": ["u", "h", 22],
           "refused_offset": 10, "something_new": 1}
    store._r.hset("j", mapping=encode({"id": "j", "state": "UP", "desktop": old}))
    rec = decode(Job, store._r.hgetall("j")).desktop
    assert rec.state is DesktopState.READY and rec.vnc_port == 5901 and rec.refused_offset == 10
    assert rec.model_dump(mode="json") == {k: v for k, v in old.items() if k != "something_new"}


def test_merged_keeps_what_was_given_and_sets_the_rest():
    rec = DesktopRecord(state=DesktopState.STARTING, restarts=1)
    ready = rec.merged(state=DesktopState.READY, vnc_port=5901, url=None)
    assert ready.model_dump(mode="json") == {"state": "ready", "restarts": 1, "vnc_port": 5901, "url": None}
    assert rec.state is DesktopState.STARTING  # the original is untouched
    assert DesktopRecord().model_dump() == {} and encode({"desktop": DesktopRecord()})["desktop"] == "{}"


def test_the_sync_record_round_trips(store):
    for rec in (SyncRecord(state=SyncState.STOPPED), SyncRecord()):
        store._r.hset("j", mapping=encode({"id": "j", "state": "UP", "sync": rec}))
        assert decode(Job, store._r.hgetall("j")).sync == rec


def test_enums_are_stored_as_their_values():
    assert encode({"a": StopIntent.TERMINATE, "b": Signals.RUNNING, "c": DesktopState.STOPPED,
                   "d": JobState.TERMINATED, "e": RunMode.FRESH}) == {
        "a": "terminate", "b": "running", "c": "stopped", "d": "TERMINATED", "e": "fresh"}
