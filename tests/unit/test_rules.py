"""Monitor rules: the spec section (validated like the rest of the spec) and the evaluator on a live run."""

from __future__ import annotations

import math

import pytest

from orchestrator.cluster.local import LocalBackend
from orchestrator.engine.rules import apply_rules, evaluate
from orchestrator.model.errors import SpecError
from orchestrator.model.events import EventKind
from orchestrator.model.monitor import MonitorSpec
from orchestrator.model.records import StopIntent
from orchestrator.model.settings import Settings
from orchestrator.model.spec import spec_for_store, validate_spec
from orchestrator.model.states import JobState, RunState
from solvers.base import Progress


def _rules(*rules: dict) -> list:
    return list(MonitorSpec.model_validate({"rules": list(rules)}).rules)


def _no_series(name: str, last: int) -> list:
    return []


def _spec(monitor: dict) -> dict:
    return {"name": "j", "solver": {"name": "command", "command": ["true"]}, "monitor": monitor}


def test_the_spec_takes_rules_and_names_the_field_of_a_bad_one():
    spec = validate_spec(_spec({"rules": [{"name": "cd-steady", "when": "series", "series": "fc/Cd",
                                           "tolerance": "0.1%", "window": 100, "action": "stop"}]}))
    assert spec.monitor.rules[0].tolerance == pytest.approx(0.001)
    with pytest.raises(SpecError) as err:
        validate_spec(_spec({"rules": [{"name": "x", "when": "converged", "below": {"p": 1e-3}, "action": "explode"}]}))
    assert "monitor.rules.0" in str(err.value) and "action" in str(err.value)
    with pytest.raises(SpecError) as err:
        validate_spec(_spec({"rules": [{"name": "x", "when": "stalled", "for": "soon"}]}))
    assert "monitor.rules.0" in str(err.value) and "soon" in str(err.value)
    with pytest.raises(SpecError) as err:
        validate_spec(_spec({"rules": [{"name": "a", "when": "diverged"}, {"name": "a", "when": "diverged"}]}))
    assert "unique" in str(err.value)


def test_converged_needs_every_named_residual_below_its_bound():
    rule, = _rules({"name": "c", "when": "converged", "below": {"p": 1e-3, "Ux": 1e-3}})
    assert evaluate(rule, Progress(residuals={"p": 5e-4, "Ux": 2e-3}), _no_series, now=0, progress_at=0) is None
    fired = evaluate(rule, Progress(residuals={"p": 5e-4, "Ux": 9e-4}), _no_series, now=0, progress_at=0)
    assert fired is not None and fired.values == {"p": 5e-4, "Ux": 9e-4}
    # a name that has no value yet never counts as converged
    assert evaluate(rule, Progress(residuals={"p": 5e-4}), _no_series, now=0, progress_at=0) is None


def test_converged_on_a_series_uses_its_latest_point():
    rule, = _rules({"name": "c", "when": "converged", "below": {"residuals/p_initial": 1e-2}})
    fired = evaluate(rule, Progress(), lambda n, last: [[7.0, 5e-3]] if n == "residuals/p_initial" else [],
                     now=0, progress_at=0)
    assert fired is not None and fired.values == {"residuals/p_initial": 5e-3}


def test_stalled_counts_from_the_last_progress():
    rule, = _rules({"name": "s", "when": "stalled", "for": "2m"})
    assert evaluate(rule, Progress(step=5), _no_series, now=1000 + 119, progress_at=1000) is None
    fired = evaluate(rule, Progress(step=5), _no_series, now=1000 + 121, progress_at=1000)
    assert fired is not None and fired.values == {"idle_seconds": 121.0, "step": 5}


def test_diverged_on_nan_on_a_fatal_message_and_above_a_bound():
    rule, = _rules({"name": "d", "when": "diverged", "above": {"p": 10}})
    assert evaluate(rule, Progress(residuals={"p": 1.0}), _no_series, now=0, progress_at=0) is None
    nan = evaluate(rule, Progress(residuals={"p": float("nan")}), _no_series, now=0, progress_at=0)
    assert nan is not None and nan.values == {"p": "nan"}
    fatal = evaluate(rule, Progress(message="FOAM FATAL ERROR: Maximum number of iterations exceeded"),
                     _no_series, now=0, progress_at=0)
    assert fatal is not None and "FOAM FATAL" in fatal.reason
    above = evaluate(rule, Progress(residuals={"p": 11.0}), _no_series, now=0, progress_at=0)
    assert above is not None and above.values == {"p": 11.0}


def test_series_steady_within_tolerance_over_the_window():
    rule, = _rules({"name": "cd", "when": "series", "series": "fc/Cd", "tolerance": "0.1%", "window": 100})
    settling = [[i, 0.5 + 0.1 / i] for i in range(1, 301)]

    def reader(name: str, last: int) -> list:
        return points[-last:] if name == "fc/Cd" else []

    points = settling[:150]   # still moving by more than 0.1 % over its last 100 points
    assert evaluate(rule, None, reader, now=0, progress_at=0) is None
    points = settling         # over the last 100 (x 201..300) it moved by 0.05 %
    fired = evaluate(rule, None, reader, now=0, progress_at=0)
    assert fired is not None and fired.values["change"] < 0.001 and fired.values["window"] == 100
    points = settling[:50]    # fewer points than the window: not yet
    assert evaluate(rule, None, reader, now=0, progress_at=0) is None


def _running(store):
    job_id = store.create_job(name="j", owner="u", spec={}, backend="local", solver="command")
    store.transition_run(job_id, "run-001", RunState.LAUNCHING)
    store.transition_run(job_id, "run-001", RunState.RUNNING, pid=123, started_at=1.0)
    return job_id


def test_a_rule_fires_once_with_an_event_and_asks_for_its_action(store):
    job_id = _running(store)
    rules = _rules({"name": "conv", "when": "converged", "below": {"p": 1e-3}, "action": "stop"},
                   {"name": "note", "when": "converged", "below": {"p": 1e-2}})
    store.record_progress(job_id, "run-001", Progress(step=40, residuals={"p": 5e-4}), 100)
    asked = []
    run = store.get_run(job_id, "run-001")
    apply_rules(store, store.get_job(job_id), run, rules, lambda j, r, intent, why: asked.append((intent, why)))
    assert asked == [(StopIntent.COMPLETE, "rule conv: converged: p 0.0005 < 0.001")]
    fired = [e.data for e in store.events(job_id) if e.kind is EventKind.RULE_FIRED]
    assert fired == [{"run": "run-001", "rule": "conv", "when": "converged", "action": "stop",
                      "values": {"p": 5e-4}, "reason": "converged: p 0.0005 < 0.001"}]
    assert store.get_run(job_id, "run-001").rules_fired == ["conv"]
    # the next pass: conv fired already; note (notify) fires now, without asking to stop anything
    apply_rules(store, store.get_job(job_id), store.get_run(job_id, "run-001"), rules,
                lambda j, r, intent, why: asked.append((intent, why)))
    apply_rules(store, store.get_job(job_id), store.get_run(job_id, "run-001"), rules,
                lambda j, r, intent, why: asked.append((intent, why)))
    assert len(asked) == 1
    assert [e.data["rule"] for e in store.events(job_id) if e.kind is EventKind.RULE_FIRED] == ["conv", "note"]


def test_a_diverged_stop_ends_the_run_stopped_and_pause_pauses(store):
    job_id = _running(store)
    rules = _rules({"name": "blowup", "when": "diverged", "action": "stop"},
                   {"name": "hold", "when": "stalled", "for": 60, "action": "pause"})
    store.record_progress(job_id, "run-001", Progress(step=3, residuals={"p": float("inf")}), 10)
    asked = []
    apply_rules(store, store.get_job(job_id), store.get_run(job_id, "run-001"), rules,
                lambda j, r, intent, why: asked.append(intent), now=0)
    run = store.get_run(job_id, "run-001")
    apply_rules(store, store.get_job(job_id), run, rules,
                lambda j, r, intent, why: asked.append(intent), now=(run.progress_at or 0) + 61)
    assert asked == [StopIntent.TERMINATE, StopIntent.PAUSE]


def test_rules_wait_while_the_run_is_not_running(store):
    job_id = _running(store)
    store.transition_run(job_id, "run-001", RunState.FROZEN)
    rules = _rules({"name": "d", "when": "diverged", "action": "stop"})
    store.record_progress(job_id, "run-001", Progress(residuals={"p": float("nan")}), 10)
    assert apply_rules(store, store.get_job(job_id), store.get_run(job_id, "run-001"), rules,
                       lambda *a: pytest.fail("stopped a frozen run")) == []


def test_a_plain_command_reports_residuals_for_the_rules_to_judge():
    from solvers.command import Command

    progress = Command().parse_progress("progress: 3/10\nresidual: p 1e-4\nresidual: Ux nan\n", None)
    assert progress is not None and progress.step == 3 and progress.residuals["p"] == 1e-4
    assert math.isnan(progress.residuals["Ux"])
    later = Command().parse_progress("residual: p 2e-4\n", progress)
    assert later is not None and later.residuals["p"] == 2e-4 and later.step == 3
    assert Command().parse_progress("residual: p lots\n", None) is None


# -- the worker's pass: log -> rule -> graceful stop -> the run's end, with the rule as its reason
class OneRunBackend(LocalBackend):
    """A run's files as the test sets them (log, exit code); signals are recorded, never sent."""

    def __init__(self, settings, log: bytes) -> None:
        super().__init__(settings)
        self.files: dict[str, bytes] = {"log.txt": log}
        self.signals: list[int] = []

    def read_bytes(self, node, path, offset=0, limit=None):
        data = self.files.get(path.name)
        return None if data is None else data[offset:None if limit is None else offset + limit]

    def group_alive(self, node, pgid):
        return "exit_code" not in self.files

    def signal_group(self, node, pgid, signum, account=None):
        self.signals.append(signum)
        return True

    def signal_tagged(self, node, tag, signum, account=None):
        return 0


@pytest.mark.parametrize("code, state, reason", [
    (b"0\n", RunState.COMPLETED, "rule conv: converged: p 1e-05 < 0.001"),
    (b"143\n", RunState.STOPPED, "rule conv: converged: p 1e-05 < 0.001; the solver did not end cleanly "
                                 "(exit code 143)"),
])
def test_a_stop_rule_ends_the_run_with_the_rule_as_its_reason(store, tmp_path, code, state, reason):
    from orchestrator.engine.lifecycle import Lifecycle

    settings = Settings(home=tmp_path, local_nodes=1)
    spec = validate_spec(_spec({"rules": [{"name": "conv", "when": "converged", "below": {"p": 1e-3},
                                           "action": "stop"}]}))
    job_id = store.create_job(name="j", owner="u", backend="local", solver="command", spec=spec_for_store(spec))
    assert store.transition_job(job_id, JobState.PROVISIONING, nodes=store.allocate("local", job_id, 1, ["node-01"]))
    assert store.transition_job(job_id, JobState.UP)
    for to in (RunState.LAUNCHING, RunState.RUNNING):
        assert store.transition_run(job_id, "run-001", to, pid=4321, log_file="log.txt")
    lc = Lifecycle.create(store, settings)
    backend = OneRunBackend(settings, b"progress: 3/10\nresidual: p 1e-5\n")
    lc.ctx.backend_of = lambda job: backend
    # the pass that reads the residual line asks the run to stop: the command has no graceful way, so SIGTERM
    lc.observe(store.get_job(job_id), store.get_run(job_id, "run-001"))
    run = store.get_run(job_id, "run-001")
    assert run.state is RunState.STOPPING and run.stop_intent is StopIntent.COMPLETE
    assert run.stop_reason == "rule conv: converged: p 1e-05 < 0.001" and backend.signals == [15]
    # the solver exits: the next pass ends the run
    backend.files["exit_code"] = code
    lc.observe(store.get_job(job_id), store.get_run(job_id, "run-001"))
    run = store.get_run(job_id, "run-001")
    assert run.state is state and run.reason == reason


def test_a_stalled_rule_counts_from_the_resume_of_a_frozen_run(store):
    job_id = _running(store)
    rules = _rules({"name": "stuck", "when": "stalled", "for": 60, "action": "notify"})
    store.record_progress(job_id, "run-001", Progress(step=3), 10)
    progress_at = store.get_run(job_id, "run-001").progress_at
    store.transition_run(job_id, "run-001", RunState.FROZEN, frozen_at=progress_at + 5)
    store.transition_run(job_id, "run-001", RunState.RUNNING, frozen_at=None, resumed_at=progress_at + 300)

    def fired(now: float) -> list:
        return apply_rules(store, store.get_job(job_id), store.get_run(job_id, "run-001"), rules,
                           lambda *a: None, now=now)

    assert fired(progress_at + 330) == []  # frozen for minutes, resumed 30 s ago: not stalled
    assert [f.rule.name for f in fired(progress_at + 361)] == ["stuck"]


def test_a_rule_naming_what_the_run_never_reports_is_warned_about_once(store):
    job_id = _running(store)  # started at t=1
    rules = _rules({"name": "cd", "when": "series", "series": "fc/CD", "tolerance": 0.01, "window": 5},
                   {"name": "ok", "when": "converged", "below": {"p": 1e-9}})
    store.record_progress(job_id, "run-001", Progress(step=30, residuals={"p": 1e-3}), 10)
    store.record_series(job_id, "run-001", {"fc/Cd": [[30.0, 0.5]]}, {})

    def warnings() -> list[dict]:
        return [e.data for e in store.events(job_id) if e.kind is EventKind.WARNING]

    def observe(now: float) -> None:
        apply_rules(store, store.get_job(job_id), store.get_run(job_id, "run-001"), rules, lambda *a: None, now=now)

    observe(now=30)  # not a minute in yet: names may still appear
    assert warnings() == []
    observe(now=62)
    observe(now=63)
    assert warnings() == [{"run": "run-001", "rule": "cd", "message": "rule cd waits for 'fc/CD', which this run "
                           "has not reported after 61s; it reports: fc/Cd, p"}]
