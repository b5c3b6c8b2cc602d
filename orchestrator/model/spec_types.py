"""Value types the job spec and its sections share: names and durations (parsed from 90s, 30m, 1h30m, 2d)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from orchestrator.model.untrusted import quoted

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms])", re.I)
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(value: Any) -> Any:
    """'1h30m', '90s', '2d', 45 (seconds) -> seconds as float; anything else is left for pydantic to reject."""
    if value is None:
        return value
    if isinstance(value, bool):
        raise ValueError(f"{quoted(value)} is not a duration; use e.g. 90s, 30m, 1h30m, 2d")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = _DURATION.findall(text)
        if text and parts and "".join(n + u for n, u in parts).lower() == text.lower():
            return float(sum(float(n) * _UNIT_SECONDS[u.lower()] for n, u in parts))
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return float(text)
        raise ValueError(f"{quoted(value)} is not a duration; use e.g. 90s, 30m, 1h30m, 2d")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0, description="seconds, or 90s/30m/1h/2d")]
