"""Sync events: forwarded from the sync process's log to the job's stream exactly once, and shown by `e2e watch`."""

from __future__ import annotations

import json

from orchestrator.cli.watch import sync_line
from orchestrator.cluster.local import LocalBackend
from orchestrator.model.events import Event, EventKind
from orchestrator.model.paths import JobPaths
from orchestrator.model.services import ServiceContext
from orchestrator.model.settings import Settings
from orchestrator.sync.service import SyncService


def _ctx(store, tmp_path) -> ServiceContext:
    settings = Settings(home=tmp_path / "home", redis_url="redis://unused", local_nodes=1)
    job_id = store.create_job(name="s", owner="t", spec={}, backend="local", solver="command")
    backend = LocalBackend(settings)
    paths = JobPaths.for_job(settings.root, job_id)
    paths.sync.root.mkdir(parents=True)
    return ServiceContext(job=store.get_job(job_id), spec=None, backend=backend, nodes=backend.inventory(),
                          paths=paths, store=store, settings=settings)


def _append(ctx, *lines: str) -> None:
    with open(ctx.paths.sync.events, "a") as fh:
        fh.write("".join(lines))


def test_events_are_forwarded_once_in_order_and_bad_lines_skipped(store, tmp_path):
    ctx = _ctx(store, tmp_path)
    service = SyncService()
    first = json.dumps({"kind": "sync.file", "ts": 1, "data": {"path": "a b", "action": "added"}}) + "\n"
    _append(ctx, first, "not json\n", json.dumps({"kind": "no.such.kind", "data": {}}) + "\n",
            json.dumps({"kind": "sync.conflict", "ts": 2, "data": {"path": "p"}}) + "\n",
            '{"kind": "sync.stats", "da')  # a line still being written is left for later
    assert service.forward_events(ctx) == 2
    assert service.forward_events(ctx) == 0
    _append(ctx, 'ta": {"files": 3}}\n')
    assert service.forward_events(ctx) == 1
    kinds = [e.kind for e in store.events(ctx.job_id) if e.kind.value.startswith("sync.")]
    assert kinds == [EventKind.SYNC_FILE, EventKind.SYNC_CONFLICT, EventKind.SYNC_STATS]


def test_watch_shows_totals_conflicts_refusals_and_process_state():
    def line(kind, **data):
        return sync_line(Event(id="1-0", kind=kind, ts=0.0, data=data))
    assert line(EventKind.SYNC_STATS, files=3, bytes=2048, deleted=0, conflicts=1, lag_p50=0.26, lag_max=0.4) == \
        "[blue]sync[/] 3 files, 2,048 bytes, 0 deleted, 1 conflicts, lag p50 0.26s max 0.40s"
    assert "kept as 'p.conflict-desktop-1'" in line(EventKind.SYNC_CONFLICT, run="run-001", path="p",
                                                     desktop_copy="p.conflict-desktop-1")
    assert "outside" in line(EventKind.SYNC_SKIP, run="run-001", path="l", message="leads outside the folder")
    assert line(EventKind.SYNC_STATE, state="restarted", message="it died") == "[blue]sync[/] restarted: it died"
    assert line(EventKind.SYNC_FILE, path="x") is None  # per-file events stay in the stream, not on screen
