"""Where the sync runs: beside the engine, reading run directories on its storage directly and those on ssh nodes
with their own disks over ssh; not at all for an unknown backend."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.cluster.base import Node
from orchestrator.model.paths import JobPaths
from orchestrator.model.records import Job
from orchestrator.model.services import ServiceContext
from orchestrator.model.states import JobState
from orchestrator.sync.service import SyncService, _Host


def _ctx(backend, desktop: bool = True) -> ServiceContext:
    node = Node("node-01", "10.0.0.2", 1, Path("/var/tmp/e2e"))
    spec = SimpleNamespace(desktop=SimpleNamespace(enabled=desktop))
    return ServiceContext(job=Job(id="j", state=JobState.UP), spec=spec, backend=backend, nodes=[node],
                          paths=JobPaths(Path("/x")), store=None, settings=None)


SHARED_SSH = SimpleNamespace(name="ssh", spec=lambda node: SimpleNamespace(shared_storage=True))
OWN_DISK_SSH = SimpleNamespace(name="ssh", spec=lambda node: SimpleNamespace(shared_storage=False))


@pytest.mark.parametrize(("backend", "with_desktop", "without_desktop"), [
    (SimpleNamespace(name="local"), True, False),
    (SimpleNamespace(name="slurm"), True, False),
    (SHARED_SSH, True, False),
    # the engine's mirror of a node's own disk is what a restart elsewhere starts from: kept either way
    (OWN_DISK_SSH, True, True),
    (SimpleNamespace(name="cloud"), False, False),  # an unknown backend: nothing assumed about its storage
])
def test_the_sync_runs_only_where_a_consumer_reads_its_copy(backend, with_desktop, without_desktop):
    assert SyncService().wanted(_ctx(backend, desktop=True)) is with_desktop
    assert SyncService().wanted(_ctx(backend, desktop=False)) is without_desktop


@pytest.mark.parametrize("shared", [True, False])
def test_a_node_with_its_own_disk_is_named_to_the_sync_process(shared, monkeypatch):
    spawned = []
    host = _Host(SimpleNamespace(spawn_detached=lambda node, argv, cwd, account=None: spawned.append(argv),
                                 write_bytes=lambda node, path, data: None), None, 1.0)
    monkeypatch.setattr(SyncService, "_host", lambda self, ctx: host)
    ctx = _ctx(SimpleNamespace(name="ssh", spec=lambda node: SimpleNamespace(shared_storage=shared)))
    ctx = dataclasses.replace(ctx, settings=SimpleNamespace(inventory=Path("/etc/e2e/nodes.yaml")))
    SyncService()._spawn(ctx)
    tail = spawned[0][-4:]
    assert (tail == ["--node", "node-01", "--inventory", "/etc/e2e/nodes.yaml"]) is not shared
