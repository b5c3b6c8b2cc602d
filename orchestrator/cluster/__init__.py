"""Cluster backends: how nodes are found, leased and driven (local, ssh, slurm).

May import: model (and the store below it, unused today); the only package that imports paramiko. Never a
solver plugin.
"""

from __future__ import annotations

from orchestrator.cluster.base import ClusterBackend
from orchestrator.model.errors import UserError
from orchestrator.model.settings import Settings


def get_backend(name: str, settings: Settings) -> ClusterBackend:
    """The backend called `name`, configured from settings."""
    if name == "local":
        from orchestrator.cluster.local import LocalBackend

        return LocalBackend(settings)
    if name == "ssh":
        from orchestrator.cluster.ssh import SSHBackend

        return SSHBackend(settings)
    if name == "slurm":
        from orchestrator.cluster.slurm import SlurmBackend

        return SlurmBackend(settings)
    raise UserError(f"unknown cluster backend {name!r}; known backends: local, ssh, slurm")
