"""The state machines are data: check the tables are complete and consistent with their helpers."""

from __future__ import annotations

import pytest

from orchestrator.model.states import (
    JOB_TERMINAL,
    JOB_TRANSITIONS,
    RUN_ACTIVE,
    RUN_ENDED,
    RUN_TRANSITIONS,
    JobState,
    RunState,
    job_sources,
    run_sources,
)

RUN_FINAL = frozenset({RunState.STOPPED})  # the only run state nothing leaves (restart leaves the others)
MACHINES = [
    pytest.param(JobState, JOB_TRANSITIONS, JOB_TERMINAL, job_sources, id="job"),
    pytest.param(RunState, RUN_TRANSITIONS, RUN_FINAL, run_sources, id="run"),
]


@pytest.mark.parametrize("states, table, terminal, sources", MACHINES)
def test_every_state_has_a_row(states, table, terminal, sources):
    # Given the enum and its transition table, Then every member has exactly one row
    assert set(table) == set(states)
    # And every target named in the table is a member of the same enum
    for state, targets in table.items():
        assert all(isinstance(t, states) for t in targets), state


@pytest.mark.parametrize("states, table, terminal, sources", MACHINES)
def test_terminal_states_are_exactly_those_without_exits(states, table, terminal, sources):
    assert terminal, "a machine without terminal states never ends"
    for state in states:
        assert (state in terminal) == (len(table[state]) == 0), state


@pytest.mark.parametrize("states, table, terminal, sources", MACHINES)
def test_no_state_transitions_to_itself(states, table, terminal, sources):
    for state, targets in table.items():
        assert state not in targets, f"{state} -> {state} would append a no-op event"


def test_no_transition_leaves_terminated():
    assert JOB_TRANSITIONS[JobState.TERMINATED] == frozenset()
    assert JobState.TERMINATED in JOB_TERMINAL
    for target in JobState:
        assert JobState.TERMINATED not in job_sources(target)


def test_failed_job_is_not_terminal_it_must_still_be_terminated():
    # FAILED jobs still hold results and maybe nodes: terminate must be able to collect them
    assert JobState.FAILED not in JOB_TERMINAL
    assert JobState.TERMINATING in JOB_TRANSITIONS[JobState.FAILED]


@pytest.mark.parametrize("states, table, terminal, sources", MACHINES)
def test_sources_agree_with_the_table(states, table, terminal, sources):
    for target in states:
        expected = {s for s, nxt in table.items() if target in nxt}
        assert sources(target) == expected, target
        assert isinstance(sources(target), frozenset)


@pytest.mark.parametrize("states, table, terminal, sources", MACHINES)
def test_every_non_initial_state_is_reachable(states, table, terminal, sources):
    initial = next(iter(states))  # QUEUED / PENDING are declared first
    reached, frontier = {initial}, [initial]
    while frontier:
        for nxt in table[frontier.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    assert reached == set(states)
    if states is RunState:  # only a restart re-enters PENDING, and only from a run with no process
        assert sources(initial) <= RUN_ENDED
    else:
        assert not sources(initial), "nothing may move back to the initial state"


@pytest.mark.parametrize("states, table, terminal, sources", MACHINES)
def test_every_state_can_still_end(states, table, terminal, sources):
    for start in states:
        seen, frontier = {start}, [start]
        while frontier:
            for nxt in table[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert seen & terminal, f"{start} can never reach a terminal state"


@pytest.mark.parametrize("enum", [JobState, RunState])
def test_values_are_the_enum_names(enum):
    for member in enum:
        assert member.value == member.name
        assert enum(member.name) is member
        assert isinstance(member, str) and member == member.name


def test_restart_leaves_only_ended_runs_and_ended_runs_have_no_process():
    assert run_sources(RunState.PENDING) == {RunState.PAUSED, RunState.COMPLETED, RunState.FAILED}
    assert RUN_ENDED == {RunState.PAUSED, RunState.COMPLETED, RunState.FAILED, RunState.STOPPED}
    assert RunState.PENDING not in RUN_ENDED


def test_freeze_and_pause_paths():
    assert RunState.FROZEN in RUN_TRANSITIONS[RunState.RUNNING]
    assert RunState.RUNNING in RUN_TRANSITIONS[RunState.FROZEN]          # resume
    assert RunState.STOPPING in RUN_TRANSITIONS[RunState.FROZEN]         # terminate a frozen run
    assert RunState.PAUSED in RUN_TRANSITIONS[RunState.STOPPING]


def test_run_active_states_are_live_and_not_ended():
    assert RUN_ACTIVE.isdisjoint(RUN_ENDED)
    assert RunState.PENDING not in RUN_ACTIVE
    for state in RUN_ACTIVE:
        assert RUN_TRANSITIONS[state], state
