"""Engine-wide numbers the faces show (/metrics): what the engine measures, reached through control."""

from __future__ import annotations

from typing import Any

from orchestrator.engine import control_latency


def fold_control_latency(store: Any) -> int:
    """Fold new control events of active jobs into the control-latency histogram (see engine.control_latency)."""
    return control_latency.fold(store)


def control_latency_histogram(store: Any) -> dict[str, Any]:
    """action -> {"buckets": [(bound, count)], "count", "sum"}."""
    return control_latency.histogram(store)
