"""Cluster backends: how nodes are found, leased and driven (local today; ssh and slurm plug in here)."""

from __future__ import annotations

from ..errors import UserError
from ..settings import Settings
from .base import ClusterBackend


def get_backend(name: str, settings: Settings) -> ClusterBackend:
    """The backend called `name`, configured from settings."""
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(settings)
    if name == "ssh":
        from .ssh import SSHBackend

        return SSHBackend(settings)
    if name == "slurm":
        from .slurm import SlurmBackend

        return SlurmBackend(settings)
    raise UserError(f"unknown cluster backend {name!r}; known backends: local, ssh, slurm")
