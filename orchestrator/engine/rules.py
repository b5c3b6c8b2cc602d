"""Monitor rules on a live run: decide which hold (converged, stalled, diverged, a steady series) and act
(an event, a pause, a stop that completes the run), each rule once per attempt."""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.model.events import EventKind
from orchestrator.model.monitor import ConvergedRule, DivergedRule, SeriesRule, StalledRule
from orchestrator.model.records import Job, Run, StopIntent
from orchestrator.model.states import RunState
from orchestrator.store.jobs import JobStore
from solvers.base import Progress

log = logging.getLogger(__name__)

# A progress message that says the solver failed (FOAM FATAL ERROR, *ERROR in ccx, a floating point exception).
_FATAL = re.compile(r"fatal|\berror\b|diverg|floating point", re.I)

NAME_GRACE = 60.0  # seconds of running before a rule naming nothing the run reports is warned about

# series name, how many latest points -> [[x, y], ...] oldest first
SeriesReader = Callable[[str, int], list[list[float]]]
Stopper = Callable[[Job, Run, StopIntent, str], None]


@dataclass(frozen=True)
class Firing:
    """A rule whose condition holds, with the values that made it hold and why, in words."""

    rule: Any
    values: dict[str, Any]
    reason: str


def _json_value(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)  # NaN is no JSON a browser reads


def current(name: str, progress: Progress | None, series: SeriesReader) -> float | None:
    """A name's latest value: the log's residual of that name, else the series' last point."""
    if progress is not None and name in progress.residuals:
        return progress.residuals[name]
    last = series(name, 1)
    return last[-1][1] if last and last[-1][1] is not None else None


def evaluate(rule: Any, progress: Progress | None, series: SeriesReader, *, now: float,
             progress_at: float | None) -> Firing | None:
    """Whether `rule` holds on what was observed; a name with no value yet never holds (converged) or
    fires (diverged)."""
    if isinstance(rule, ConvergedRule):
        values = {name: current(name, progress, series) for name in rule.below}
        if all(v is not None and v < rule.below[name] for name, v in values.items()):
            shown = {k: _json_value(v) for k, v in values.items() if v is not None}
            text = ", ".join(f"{k} {v:.3g} < {rule.below[k]:g}" for k, v in values.items() if v is not None)
            return Firing(rule, shown, f"converged: {text}")
        return None
    if isinstance(rule, StalledRule):
        if progress_at is None:
            return None
        idle = now - progress_at
        if idle >= rule.for_:
            step = progress.step if progress is not None else None
            return Firing(rule, {"idle_seconds": round(idle, 1), "step": step},
                          f"stalled: no progress for {idle:.0f}s (limit {rule.for_:g}s)")
        return None
    if isinstance(rule, DivergedRule):
        return _diverged(rule, progress, series)
    if isinstance(rule, SeriesRule):
        window = series(rule.series, rule.window)
        ys = [p[1] for p in window]
        if len(ys) < rule.window or any(y is None or not math.isfinite(y) for y in ys):
            return None
        spread, scale = max(ys) - min(ys), max(abs(ys[-1]), 1e-300)
        if spread / scale <= rule.tolerance:
            return Firing(rule, {rule.series: ys[-1], "x": window[-1][0], "change": spread / scale,
                                 "window": rule.window},
                          f"{rule.series} steady: changed {100 * spread / scale:.3g} % over the last "
                          f"{rule.window} points (tolerance {100 * rule.tolerance:g} %)")
        return None
    raise TypeError(f"unknown rule {rule!r}")


def named(rule: Any) -> list[str]:
    """The residual or series names a rule waits for."""
    if isinstance(rule, ConvergedRule):
        return list(rule.below)
    if isinstance(rule, DivergedRule):
        return list(rule.above)
    return [rule.series] if isinstance(rule, SeriesRule) else []


def _warn_unknown_names(store: JobStore, job: Job, run: Run, rules: list[Any], now: float) -> None:
    """A rule naming what the run has never reported (a typo: fc/CD for fc/Cd) would wait forever in
    silence: once the run has run a while, say so once per rule and run attempt, with what it does report."""
    if run.started_at is None or now - run.started_at < NAME_GRACE or run.progress is None:
        return
    waiting = [r for r in rules if r.name not in run.rules_fired and r.name not in run.rules_warned]
    if not waiting:
        return
    known = set(run.progress.residuals) | set(store.series_names(job.id, run.id))
    for rule in waiting:
        unknown = [n for n in named(rule) if n not in known]
        if not unknown:
            continue
        run.rules_warned = [*run.rules_warned, rule.name]
        store.update_run(job.id, run.id, rules_warned=run.rules_warned)
        shown = ", ".join(sorted(known)[:30]) or "nothing yet"
        store.append_event(job.id, EventKind.WARNING, {
            "run": run.id, "rule": rule.name,
            "message": f"rule {rule.name} waits for {', '.join(map(repr, unknown))}, which this run has not "
                       f"reported after {now - run.started_at:.0f}s; it reports: {shown}"})


def _diverged(rule: DivergedRule, progress: Progress | None, series: SeriesReader) -> Firing | None:
    if progress is not None:
        bad = {k: str(v) for k, v in progress.residuals.items() if not math.isfinite(v)}
        if bad:
            return Firing(rule, bad, f"diverged: {', '.join(f'{k} is {v}' for k, v in bad.items())}")
        if progress.message and _FATAL.search(progress.message):
            return Firing(rule, {"message": progress.message[:300]}, f"diverged: {progress.message[:200]}")
    for name, bound in rule.above.items():
        value = current(name, progress, series)
        if value is not None and (not math.isfinite(value) or value > bound):
            return Firing(rule, {name: _json_value(value)}, f"diverged: {name} {value:.3g} > {bound:g}")
    return None


def apply_rules(store: JobStore, job: Job, run: Run, rules: list[Any], stop: Stopper,
                now: float | None = None) -> list[Firing]:
    """Evaluate the spec's rules on a RUNNING run and act on those that hold and have not fired in this
    attempt: one `rule.fired` event each, then the action (pause: the graceful checkpoint; stop: fields
    written, the run ends COMPLETED, or STOPPED for a `diverged` rule, with the rule as its reason)."""
    if not rules or run.state is not RunState.RUNNING:
        return []
    now = time.time() if now is None else now
    # the stall clock: the last progress, or the start; a run frozen meanwhile counts from its resume
    clock = max((t for t in (run.progress_at or run.started_at, run.resumed_at) if t is not None), default=None)

    def series(name: str, last: int) -> list[list[float]]:
        return store.series_points(job.id, run.id, name, last)

    _warn_unknown_names(store, job, run, rules, now)
    fired: list[Firing] = []
    for rule in rules:
        if rule.name in run.rules_fired:
            continue
        firing = evaluate(rule, run.progress, series, now=now, progress_at=clock)
        if firing is None:
            continue
        run.rules_fired = [*run.rules_fired, rule.name]
        store.update_run(job.id, run.id, rules_fired=run.rules_fired)
        store.append_event(job.id, EventKind.RULE_FIRED, {
            "run": run.id, "rule": rule.name, "when": rule.when, "action": rule.action,
            "values": firing.values, "reason": firing.reason})
        fired.append(firing)
        if rule.action == "notify":
            continue
        why = f"rule {rule.name}: {firing.reason}"
        if rule.action == "pause":
            intent = StopIntent.PAUSE
        else:
            intent = StopIntent.TERMINATE if isinstance(rule, DivergedRule) else StopIntent.COMPLETE
        log.info("%s/%s: %s -> %s", job.id, run.id, why, rule.action)
        stop(job, run, intent, why)
        break  # the run is stopping: later rules wait (and a restart re-arms them all)
    return fired
