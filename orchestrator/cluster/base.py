"""The cluster backend contract: nodes, detached spawn, process-group signals, file access."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from orchestrator.model.errors import BackendError
from orchestrator.model.identity import Account


class NodeUnreachable(BackendError):
    """The node did not answer (refused, timed out, or a call ran past its deadline): a node fault."""


class AllocationPending(BackendError):
    """The backend's own scheduler has queued the allocation (other users hold the nodes): it starts later, at
    `expected_start` (epoch seconds) when the scheduler gives one. Not a failure: the engine asks again."""

    def __init__(self, message: str, expected_start: float | None = None) -> None:
        super().__init__(message)
        self.expected_start = expected_start


class HostKeyRefused(BackendError):
    """A node's SSH host key is unknown or changed, so the engine refused to talk to it (hostkeys.py raises it)."""

    reason = "SSH host key refused"


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

    def inventory_names(self) -> tuple[str, ...]:
        """The inventory's node names, in order (what a lease is taken from)."""
        return tuple(n.name for n in self.inventory())

    def nodes_named(self, names: list[str]) -> list[Node]:
        """The inventory's nodes of these names, in the order given (names no longer in it left out)."""
        by_name = {n.name: n for n in self.inventory()}
        return [by_name[name] for name in names if name in by_name]

    # -- identity. `account` is the job owner's OS account: every process the engine starts for a job runs as
    # it, with a clean environment (cluster/identity.as_account), and every signal for a job is sent as it, so a
    # pid the job wrote itself can never aim the engine at another account's process. None: the engine's own
    # account (single-user mode).
    @abstractmethod
    def prepare_node(self, node: Node, job_id: str, account: Account | None = None) -> None:
        """Make the node ready for the job (its directory, owned by the account, 0700); idempotent."""

    @abstractmethod
    def spawn_detached(self, node: Node, argv: list[str], cwd: Path, account: Account | None = None) -> None:
        """Start argv as the account in its own session on the node and return at once; it outlives the caller."""

    @abstractmethod
    def group_alive(self, node: Node, pgid: int) -> bool:
        """Whether any process of the process group still exists on the node."""

    @abstractmethod
    def signal_group(self, node: Node, pgid: int, signum: int, account: Account | None = None) -> bool:
        """Send signum (as the account) to the whole process group; False when the group is already gone."""

    def hand_over(self, node: Node, path: Path, account: Account | None = None) -> None:
        """Give a tree the engine wrote (run files, desktop files) to the account: owner uid/gid, never following
        a symlink (the tree may hold the job's own links). A no-op without an account or in single-user mode."""
        return None

    @abstractmethod
    def read_bytes(self, node: Node, path: Path, offset: int = 0, limit: int | None = None) -> bytes | None:
        """Bytes of a file on the node from offset (None if it does not exist)."""

    def list_files(self, node: Node, root: Path, patterns: tuple[str, ...], limit: int = 200) -> list[str]:
        """Regular files under root matching the glob patterns, as paths relative to root, sorted, at most
        `limit`; symlinks are not listed (nor followed by read_bytes). This default reads the engine's own
        filesystem (local and shared-storage backends); a backend whose nodes keep their own files lists there."""
        found: set[str] = set()
        real = root.resolve()
        for pattern in patterns:
            for path in root.glob(pattern):
                rel = path.relative_to(root)
                if path.is_file() and path.resolve() == real / rel:  # no symlink on the way, nor the file one
                    found.add(rel.as_posix())
        return sorted(found)[:limit]

    @abstractmethod
    def write_bytes(self, node: Node, path: Path, data: bytes) -> None:
        """Write a file on the node atomically (temp file + rename)."""

    @abstractmethod
    def exists(self, node: Node, path: Path) -> bool:
        """Whether the path exists on the node."""

    @abstractmethod
    def collect(self, node: Node, src: Path, dest: Path) -> None:
        """Copy a directory from the node into a head-node directory (merging)."""

    # -- runs spanning nodes. Every solver process carries E2E_RUN_TAG=<job>/<run> in its environment
    # (the wrapper exports it and MPI launchers forward it), so a run's ranks can be found on any node.
    def tagged_processes(self, node: Node, tag: str) -> list[int]:
        """Pids of live processes on the node whose environment has E2E_RUN_TAG=tag."""
        return []

    def signal_tagged(self, node: Node, tag: str, signum: int, account: Account | None = None) -> int:
        """Send signum (as the account) to every process of the run on the node; how many were signalled."""
        return 0

    # -- allocations from an external scheduler (slurm); static pools (local, ssh) need none of these.
    def allocate(self, job_id: str, nodes: list[Node], cores_per_node: int, account: Account | None = None) -> object:
        """Obtain the leased nodes for the job before prepare_node (idempotent); the allocation is the account's."""
        return None  # an optional hook: static pools need no allocation

    def release(self, job_id: str) -> None:
        """Give the job's allocation back when it terminates (idempotent)."""
        return None  # an optional hook, like allocate

    def expected_start(self, job_id: str) -> float | None:
        """When the backend's own scheduler expects a pending allocation to start; None: it does not say."""
        return None  # an optional hook: a backend without a scheduler of its own has nothing pending

    def suspend(self, job_id: str) -> bool:
        """Freeze every process of the job natively; False: not supported, signal the processes instead."""
        return False

    def resume(self, job_id: str) -> bool:
        """Undo suspend; False: not supported, signal the processes instead."""
        return False

    # Whether the run watcher on the host that spawns a run sees its folder and its wrapper process (the
    # local backend's runs are this host's processes and folders; ssh and Slurm nodes are other hosts).
    watchable_here: bool = False

    def shares_storage(self, node: Node) -> bool:
        """Whether the node sees the head node's run directories at the same path (else they are staged)."""
        return True

    def stage_in(self, nodes: list[Node], path: Path, account: Account | None = None) -> None:
        """Make a head-node directory visible at the same path on every node (no-op on shared storage); the
        nodes' copies are written as the account."""
        return None  # shared storage: already visible

    def stage_out(self, nodes: list[Node], path: Path, account: Account | None = None) -> None:
        """Gather what the nodes wrote under path back into the head node's copy (no-op on shared storage);
        read as the account on the nodes, the head's copy stays the account's."""
        return None  # shared storage: already gathered
