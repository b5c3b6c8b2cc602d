"""The job spec's `monitor:` section: rules the worker evaluates on a run's live progress and series."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from orchestrator.model.spec_types import NAME_PATTERN, Duration

Action = Literal["notify", "pause", "stop"]
MAX_RULES = 20
MAX_WINDOW = 10_000  # points a `series` rule looks back over (the store keeps at least this many per series)


def parse_fraction(value: Any) -> Any:
    """'0.1%' -> 0.001; a number is a fraction already (0.001 = 0.1 %)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage; use e.g. 0.1% or 0.001") from None
    return value


def _finite(values: dict[str, float]) -> dict[str, float]:
    for name, bound in values.items():
        if not math.isfinite(bound):
            raise ValueError(f"{name}: the bound must be a finite number")
    if not values:
        raise ValueError("name at least one residual or series, e.g. {p: 1e-4}")
    return values


Thresholds = Annotated[dict[Annotated[str, Field(min_length=1, max_length=200)], float], Field(max_length=50)]


class RuleBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, . _ -; unique among the rules")
    action: Action = Field("notify", description="notify (an event), pause (checkpoint, restartable) or "
                                                 "stop (fields written, the run ends COMPLETED)")


class ConvergedRule(RuleBase):
    """Every named residual (the log's initial residuals) or series (its latest value) is below its bound."""

    when: Literal["converged"]
    below: Thresholds

    _check = field_validator("below")(classmethod(lambda cls, v: _finite(v)))


class StalledRule(RuleBase):
    """The solver's log showed no progress for `for` (a duration: 90s, 10m, 1h)."""

    when: Literal["stalled"]
    for_: Duration = Field(alias="for")


class DivergedRule(RuleBase):
    """A NaN residual, a fatal solver message (FOAM FATAL ERROR ...), or a residual/series above its bound."""

    when: Literal["diverged"]
    above: Thresholds = Field(default_factory=dict)

    @field_validator("above")
    @classmethod
    def _bounds(cls, value: dict[str, float]) -> dict[str, float]:
        return _finite(value) if value else value


class SeriesRule(RuleBase):
    """A series changed by less than `tolerance` (relative: 0.1% or 0.001) over its last `window` points,
    e.g. Cd steady to 0.1 % over 100 iterations."""

    when: Literal["series"]
    series: str = Field(min_length=1, max_length=200, description="a series name, e.g. fc/Cd")
    tolerance: Annotated[float, BeforeValidator(parse_fraction), Field(gt=0, le=1)]
    window: int = Field(ge=2, le=MAX_WINDOW, description="points (iterations) looked back over")


Rule = Annotated[Union[ConvergedRule, StalledRule, DivergedRule, SeriesRule], Field(discriminator="when")]


class MonitorSpec(BaseModel):
    """What the engine watches on a live run, and what it does when a rule holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"two rules are named {rule.name!r}; rule names must be unique")
            seen.add(rule.name)
        return rules
