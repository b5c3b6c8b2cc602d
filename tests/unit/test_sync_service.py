"""Where the sync runs: beside the engine when the run directories are on its storage; not at all otherwise."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.cluster.base import Node
from orchestrator.paths import JobPaths
from orchestrator.services import ServiceContext
from orchestrator.sync.service import SyncService


def _ctx(backend) -> ServiceContext:
    node = Node("node-01", "10.0.0.2", 1, Path("/var/tmp/e2e"))
    return ServiceContext(job={"id": "j"}, spec=None, backend=backend, nodes=[node], paths=JobPaths(Path("/x")),
                          store=None, settings=None)


@pytest.mark.parametrize(("backend", "wanted"), [
    (SimpleNamespace(name="local"), True),
    (SimpleNamespace(name="slurm"), True),
    (SimpleNamespace(name="ssh", spec=lambda node: SimpleNamespace(shared_storage=True)), True),
    (SimpleNamespace(name="ssh", spec=lambda node: SimpleNamespace(shared_storage=False)), False),
    (SimpleNamespace(name="cloud"), False),  # an unknown backend: nothing assumed about its storage
])
def test_the_sync_runs_only_where_it_sees_both_folders(backend, wanted):
    assert SyncService().wanted(_ctx(backend)) is wanted
