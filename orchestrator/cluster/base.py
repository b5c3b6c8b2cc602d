"""The cluster backend contract: nodes, detached spawn, process-group signals, file access."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Node:
    """A node of a backend's inventory."""

    name: str
    address: str   # what MPI hostfiles and ssh use to reach it
    cores: int
    root: Path     # the node's own directory (scratch, per-node state)


class ClusterBackend(ABC):
    """Owns every access to nodes. The engine leases nodes in the store and then calls these."""

    name: str

    @abstractmethod
    def inventory(self) -> list[Node]:
        """Every node this backend can lease."""

    @abstractmethod
    def prepare_node(self, node: Node, job_id: str) -> None:
        """Make the node ready for the job (directories); idempotent."""

    @abstractmethod
    def spawn_detached(self, node: Node, argv: list[str], cwd: Path) -> None:
        """Start argv in its own session on the node and return at once; it outlives the caller."""

    @abstractmethod
    def group_alive(self, node: Node, pgid: int) -> bool:
        """Whether any process of the process group still exists on the node."""

    @abstractmethod
    def signal_group(self, node: Node, pgid: int, signum: int) -> bool:
        """Send signum to the whole process group; False when the group is already gone."""

    @abstractmethod
    def read_bytes(self, node: Node, path: Path, offset: int = 0, limit: int | None = None) -> bytes | None:
        """Bytes of a file on the node from offset (None if it does not exist)."""

    @abstractmethod
    def write_bytes(self, node: Node, path: Path, data: bytes) -> None:
        """Write a file on the node atomically (temp file + rename)."""

    @abstractmethod
    def exists(self, node: Node, path: Path) -> bool:
        """Whether the path exists on the node."""

    @abstractmethod
    def collect(self, node: Node, src: Path, dest: Path) -> None:
        """Copy a directory from the node into a head-node directory (merging)."""
