"""Control commands without processes: the command table, edits, limits, and the store's run/revision writes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.engine.edits import (
    apply_assignments,
    apply_overlay,
    check_files,
    check_relpath,
    diff,
    overlay,
    parse_assignments,
    save_files,
)
from orchestrator.engine.limits import check_limits, deadlines
from orchestrator.model.commands import ALLOWED, Command, allowed_commands, check_allowed
from orchestrator.model.errors import InvalidState, SpecError
from orchestrator.model.events import EventKind
from orchestrator.model.paths import JobPaths
from orchestrator.model.records import Job, Run
from orchestrator.model.states import RUN_ACTIVE, RUN_ENDED, JobState, RunState


def new_job(store, name: str = "pitz") -> str:
    return store.create_job(name=name, owner="alice", spec={"name": name}, backend="local", solver="command")


# -- the command table

def test_every_command_but_terminate_needs_an_up_job():
    for state in JobState:
        for run_state in RunState:
            allowed = allowed_commands(state, run_state)
            if state is not JobState.UP:
                assert set(allowed) <= {Command.TERMINATE}, (state, run_state)


def test_restart_and_rerun_only_when_no_process_runs():
    assert ALLOWED[Command.RESTART] <= RUN_ENDED and ALLOWED[Command.RERUN] <= RUN_ENDED
    assert RunState.STOPPED not in ALLOWED[Command.RESTART]
    assert ALLOWED[Command.PAUSE] <= RUN_ACTIVE and ALLOWED[Command.FREEZE] == {RunState.RUNNING}


def test_a_refusal_names_the_state_and_what_is_allowed():
    job = Job(id="j1", state=JobState.UP)
    run = Run(id="run-001", state=RunState.RUNNING)
    with pytest.raises(InvalidState) as err:
        check_allowed(Command.RESTART, job, run)
    assert "run-001 is RUNNING" in err.value.message
    assert "allowed now: pause, freeze, edit-live, terminate" in err.value.message
    check_allowed(Command.PAUSE, job, run)  # allowed: no exception
    with pytest.raises(InvalidState, match="TERMINATED; allowed now: none"):
        check_allowed(Command.TERMINATE, Job(id="j1", state=JobState.TERMINATED), run)


# -- edits

def test_assignments_parse_yaml_values_and_default_to_solver_options():
    parsed = parse_assignments(["parameters.endTime=0.5", "limits.walltime=2h", "solver.mesh=none",
                                "parameters.label=\"0.5\""])
    assert parsed == [("solver.parameters.endTime", 0.5), ("limits.walltime", "2h"), ("solver.mesh", "none"),
                      ("solver.parameters.label", "0.5")]


@pytest.mark.parametrize("item, field", [
    ("endTime", "--set"), ("=3", "--set"), ("a..b=1", "--set"), ("a b=1", "--set"),
    ("cluster.nodes=3", "cluster.nodes"), ("name=other", "name"), ("solver.name=command", "solver.name"),
])
def test_bad_or_immutable_assignments_are_refused_by_field(item, field):
    with pytest.raises(SpecError) as err:
        parse_assignments([item])
    assert err.value.problems[0][0] == field


def test_apply_assignments_copies_and_creates_sections():
    spec = {"name": "a", "solver": {"name": "openfoam", "parameters": {"endTime": 1}}}
    new = apply_assignments(spec, [("solver.parameters.endTime", 2), ("limits.walltime", "1h")])
    assert spec["solver"]["parameters"]["endTime"] == 1 and "limits" not in spec
    assert new["solver"]["parameters"]["endTime"] == 2 and new["limits"] == {"walltime": "1h"}
    with pytest.raises(SpecError, match="is a value"):
        apply_assignments(spec, [("solver.name.x", 1)])


def test_diff_lists_changed_leaves_only():
    old = {"a": 1, "b": {"c": 2, "d": 3}}
    new = {"a": 1, "b": {"c": 5, "d": 3}, "e": 4}
    assert diff(old, new) == [{"field": "b.c", "old": 2, "new": 5}, {"field": "e", "old": None, "new": 4}]


@pytest.mark.parametrize("rel", ["", "/etc/passwd", "../x", "a/../../x", ".e2e/claim", "dir/", "a\nb",
                                 "x" * 256, "a/" * 600 + "b"])   # longer than a name or a path may be
def test_file_destinations_stay_inside_the_case(rel):
    with pytest.raises(SpecError):
        check_relpath(rel)


def test_file_edits_are_checked_saved_per_revision_and_overlaid(tmp_path):
    (tmp_path / "fvSolution").write_text("v2")
    with pytest.raises(SpecError, match="not a readable file"):
        check_files({str(tmp_path / "missing"): "system/fvSolution"})
    paths = JobPaths(tmp_path / "job")
    save_files(paths, 2, check_files({str(tmp_path / "fvSolution"): "system/fvSolution"}))
    (tmp_path / "fvSolution").write_text("v3")
    (tmp_path / "U").write_text("u3")
    save_files(paths, 3, check_files({str(tmp_path / "fvSolution"): "system/fvSolution", str(tmp_path / "U"): "0/U"}))
    assert {k: v.read_text() for k, v in overlay(paths, 2).items()} == {"system/fvSolution": "v2"}
    newest = overlay(paths, 3)
    assert {k: v.read_text() for k, v in newest.items()} == {"system/fvSolution": "v3", "0/U": "u3"}
    run_dir = tmp_path / "run"
    assert sorted(apply_overlay(newest, run_dir)) == ["0/U", "system/fvSolution"]
    assert (run_dir / "system" / "fvSolution").read_text() == "v3"


# -- limits

def _job(store, **limits) -> dict:
    job_id = new_job(store)
    store.update_job(job_id, spec={"name": "x", "limits": limits}, up_at=time.time() - 100)
    store._r.hset(store._keys.job(job_id), "state", "UP")
    return store.get_job(job_id)


def test_walltime_warns_first_then_terminates(store):
    job = _job(store, walltime=105.0)  # up 100 s ago: inside the warning window (10% = 10.5 s)
    assert check_limits(store, job, None) is None
    warnings = [e for e in store.events(job.id) if e.kind is EventKind.WARNING]
    assert len(warnings) == 1 and "walltime" in warnings[0].data["message"]
    assert check_limits(store, store.get_job(job.id), None) is None   # warned once only
    assert len([e for e in store.events(job.id) if e.kind is EventKind.WARNING]) == 1
    store.update_job(job.id, up_at=time.time() - 200)
    assert check_limits(store, store.get_job(job.id), None) == "walltime"
    assert store.get_job(job.id).state is JobState.TERMINATING


def test_idle_shutdown_counts_only_while_no_run_is_active(store):
    job = _job(store, idle_shutdown=50.0)
    running = Run(id="run-001", state=RunState.RUNNING)
    assert deadlines(job, running) == {}
    ended = Run(id="run-001", state=RunState.COMPLETED, ended_at=time.time() - 60)
    assert check_limits(store, job, ended) == "idle_shutdown"
    job2 = _job(store, idle_shutdown=50.0)
    store.update_job(job2.id, desktop_activity_at=time.time())  # someone uses the desktop
    assert check_limits(store, store.get_job(job2.id), ended) is None


def test_terminate_on_end_ends_the_job_with_its_run_but_not_a_paused_or_recovering_one(store):
    job = _job(store, terminate_on_end=True)
    assert check_limits(store, job, Run(id="run-001", state=RunState.RUNNING)) is None
    assert check_limits(store, job, Run(id="run-001", state=RunState.PAUSED)) is None   # waits for a restart
    struck = Run(id="run-001", state=RunState.FAILED, failed_nodes=["n1"])
    recovering = _job(store, terminate_on_end=True)
    store.update_job(recovering.id, spec={"name": "x", "limits": {"terminate_on_end": True},
                                          "cluster": {"restart_on_node_failure": True}})
    assert check_limits(store, store.get_job(recovering.id), struck) is None   # restarts on a replacement node
    assert store.get_job(recovering.id).state is JobState.UP
    assert check_limits(store, job, Run(id="run-001", state=RunState.COMPLETED)) == "terminate_on_end"
    ended = store.get_job(job.id)
    assert (ended.state, ended.terminated_by) == (JobState.TERMINATING, "terminate_on_end")
    control = [e.data for e in store.events(job.id) if e.kind is EventKind.CONTROL]
    assert control == [{"action": "terminate", "by": "terminate_on_end",
                        "reason": "run-001 completed; the job ends with its run (limits.terminate_on_end)"}]
    assert check_limits(store, _job(store), Run(id="run-001", state=RunState.COMPLETED)) is None   # off by default


# -- store: runs and revisions

def test_add_run_only_after_the_current_run_ended(store):
    job_id = new_job(store)
    assert store.add_run(job_id, after="run-001") is None  # still PENDING
    store._r.hset(store._keys.run(job_id, "run-001"), "state", "COMPLETED")
    assert store.add_run(job_id, after="run-001", revision=2) == "run-002"
    assert store.add_run(job_id, after="run-001") is None  # run-001 is no longer current
    job = store.get_job(job_id)
    assert job.current_run == "run-002" and job.runs == 2
    assert store.get_run(job_id, "run-002").revision == 2
    assert [r.id for r in store.list_runs(job_id)] == ["run-001", "run-002"]


def test_add_revision_is_compare_and_set(store):
    job_id = new_job(store)
    assert store.add_revision(job_id, 1, {"name": "b"}, {"by": "u", "changes": []}) == 2
    assert store.add_revision(job_id, 1, {"name": "c"}, {"by": "v", "changes": []}) is None
    assert store.get_job(job_id).spec == {"name": "b"} and store.get_job(job_id).revision == 2
    assert [r["revision"] for r in store.revisions(job_id)] == [2]


def test_set_run_once_treats_a_cleared_field_as_unset(store):
    job_id = new_job(store)
    assert store.set_run_once(job_id, "run-001", "term_sent_at", 1.0)
    assert not store.set_run_once(job_id, "run-001", "term_sent_at", 2.0)
    store.update_run(job_id, "run-001", term_sent_at=None)   # a restart clears it
    assert store.set_run_once(job_id, "run-001", "term_sent_at", 3.0)
    assert store.get_run(job_id, "run-001").term_sent_at == 3.0


def test_restart_is_a_transition_back_to_pending(store, tmp_path: Path):
    job_id = new_job(store)
    store._r.hset(store._keys.run(job_id, "run-001"), "state", "PAUSED")
    assert store.transition_run(job_id, "run-001", RunState.PENDING, expect=[RunState.PAUSED], attempt=2)
    run = store.get_run(job_id, "run-001")
    assert run.state is RunState.PENDING and run.attempt == 2
