"""A run's monitored series: capped point lists per name, written together with the run's file offsets and
one `run.series` event per read."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from orchestrator.model.events import EventKind
from orchestrator.store.codec import encode
from orchestrator.store.keys import KeyNames

SERIES_KEPT = 10_000  # points kept per series: the monitor's plot and a `series` rule's longest window
MAX_SERIES = 500      # series names one run may have (a case with thousands of probes gets the first ones)
MAX_NAME = 200        # characters of a series name (column names come from the job's own files)
EVENT_POINTS = 500    # points per series one event carries (a backlog read at once: the store keeps them all)


def finite(points: list[list[float]]) -> list[list[float | None]]:
    """Points for JSON readers (browsers refuse NaN): a non-finite value becomes null."""
    return [[v if v is None or math.isfinite(v) else None for v in p] for p in points]


class SeriesPoints:
    """JobStore's series reads and writes (a mixin sharing its connection, key names and stream writer)."""

    _r: Any
    _keys: KeyNames
    _xadd: Callable[[Any, str, EventKind, dict[str, Any], str], Any]  # JobStore's stream writer

    def record_series(self, job_id: str, run_id: str, points: dict[str, list[list[float]]],
                      files: dict[str, dict[str, Any]]) -> list[str]:
        """Append new points per series and store the run's file offsets, together; one event carries every
        series of this read ({"run", "series": [{"name", "points"}]}: one event per read, not per series, so a
        case with dozens of series does not push the job's other events out of its capped stream). Returns
        the names taken (new names beyond MAX_SERIES are dropped)."""
        known = set(self._r.smembers(self._keys.series_names(job_id, run_id)))
        taken = []
        for name in points:
            if len(name) <= MAX_NAME and (name in known or len(known) < MAX_SERIES):
                known.add(name)
                taken.append(name)
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(self._keys.run(job_id, run_id), mapping=encode({"series_files": files}))
        for name in taken:
            key = self._keys.series(job_id, run_id, name)
            pipe.sadd(self._keys.series_names(job_id, run_id), name)
            pipe.rpush(key, *(json.dumps(p) for p in points[name]))
            pipe.ltrim(key, -SERIES_KEPT, -1)
        if taken:
            batch = [{"name": n, "points": finite(points[n][-EVENT_POINTS:]),
                      **({"skipped": len(points[n]) - EVENT_POINTS} if len(points[n]) > EVENT_POINTS else {})}
                     for n in taken]
            self._xadd(pipe, job_id, EventKind.SERIES, {"run": run_id, "series": batch}, f"{time.time():.6f}")
        pipe.execute()
        return taken

    def series_names(self, job_id: str, run_id: str) -> list[str]:
        return sorted(self._r.smembers(self._keys.series_names(job_id, run_id)))

    def series_points(self, job_id: str, run_id: str, name: str, last: int = SERIES_KEPT) -> list[list[float]]:
        """The latest `last` points of one series, oldest first ([] for an unknown name)."""
        raw = self._r.lrange(self._keys.series(job_id, run_id, name), -max(1, last), -1)
        return [json.loads(p) for p in raw]
