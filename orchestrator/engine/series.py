"""Tail a running run's monitor files (the plugin's series_files) into series points, from where it last read."""

from __future__ import annotations

import logging
from typing import Any

from orchestrator.cluster.base import ClusterBackend, Node
from orchestrator.model.paths import RunPaths
from orchestrator.model.records import Run
from orchestrator.store.jobs import JobStore
from solvers.base import SolverPlugin

log = logging.getLogger(__name__)

SERIES_CHUNK = 256 << 10  # bytes read per monitor file per observation: a backlog drains over a few passes
SERIES_BUDGET = 2 << 20   # bytes read over all of a run's monitor files per observation: the rest next pass
MAX_FILES = 200           # monitor files followed per run


def follow_series(store: JobStore, job_id: str, run: Run, plugin: SolverPlugin, backend: ClusterBackend,
                  head: Node, paths: RunPaths) -> dict[str, list[list[float]]]:
    """Read what the run's monitor files gained since the last pass (complete lines only), parse it with the
    plugin, store the points and the new offsets; returns the new points by series name."""
    patterns = plugin.series_files()
    if not patterns:
        return {}
    files: dict[str, dict[str, Any]] = {k: dict(v) for k, v in run.series_files.items()}
    points: dict[str, list[list[float]]] = {}
    changed, budget = False, SERIES_BUDGET
    for rel in backend.list_files(head, paths.root, patterns, MAX_FILES):
        if budget <= 0:
            break
        state = files.setdefault(rel, {"offset": 0})
        if state.get("skip"):
            continue
        offset = int(state.get("offset", 0))
        if state.get("attempt", run.attempt) < run.attempt:  # first look in a new attempt: rewritten?
            if offset and not backend.read_bytes(head, paths.root / rel, offset - 1, 1):
                state = files[rel] = {"offset": 0}  # shorter than we read: the restart rewrote it (probes)
                offset = 0
            state["attempt"] = run.attempt
            changed = True
        data = backend.read_bytes(head, paths.root / rel, offset, SERIES_CHUNK)
        if not data:
            continue
        budget -= len(data)
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) < SERIES_CHUNK:
                continue  # a line still being written
            cut = len(data)  # one line longer than a chunk: not a table we can use; step over it
        memory = {k: v for k, v in state.items() if k not in ("offset", "attempt")}
        try:
            found = plugin.parse_series(rel, data[:cut].decode(errors="replace"), memory)
        except Exception as exc:  # noqa: BLE001 - a plugin's parser failing on one file must not stop the run's observation
            log.warning("%s/%s: parsing %s failed: %s", job_id, run.id, rel, exc)
            memory, found = {"skip": True}, {}
        files[rel] = {**memory, "offset": offset + cut, "attempt": run.attempt}
        changed = True
        for name, new in found.items():
            points.setdefault(name, []).extend(new)
    if changed:
        store.record_series(job_id, run.id, points, files)
        run.series_files = files
    return points
