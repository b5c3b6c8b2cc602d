"""The sync daemon's link to the ssh node a job runs on when that node has its own disk (no shared storage).

Each run directory on the node is mirrored into the engine's runs/<run> (a SyncPair of a RemoteSide and a
LocalSide); the usual runs/<run> <-> work/<run> pair then reaches the desktop. So the engine's copy is always
the node's current one plus the desktop's edits, and a restart's stage_in never pushes a stale copy back.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from orchestrator.cluster.ssh import SSHBackend
from orchestrator.cluster.transfer import rsync_usable, ssh_command
from orchestrator.model.errors import BackendError
from orchestrator.model.settings import Settings
from orchestrator.sync.engine import Emit, SyncPair
from orchestrator.sync.remote import RemoteCopier, RemoteSide
from orchestrator.sync.tree import LocalSide


class NodeLink:
    """The backend, the node and one multiplexed ssh master (rsync per file would pay a handshake each)."""

    def __init__(self, backend: SSHBackend, node_name: str) -> None:
        self.backend = backend
        self.node = next(n for n in backend.inventory() if n.name == node_name)
        # A private folder for the master's socket: short (sun_path holds 108 bytes) and nobody else's.
        self._sockets = tempfile.mkdtemp(prefix="e2e-sync-")
        self.ssh = [*ssh_command(backend, self.node), "-o", "ControlMaster=auto",
                    "-o", f"ControlPath={self._sockets}/%C", "-o", "ControlPersist=120"]
        address = backend.spec(self.node).address
        self.host = f"[{address}]" if ":" in address else address
        try:
            use_rsync = rsync_usable(backend, self.node)
        except BackendError:
            # The node is silent right now: start anyway on SFTP (works wherever the node answers again), for
            # a daemon that fails to start never does the final pass a terminate waits for.
            use_rsync = False
        self.copier = RemoteCopier(self.ssh, self.host, use_rsync)

    @classmethod
    def open(cls, inventory: Path, node_name: str) -> NodeLink:
        return cls(SSHBackend(Settings(inventory=inventory)), node_name)

    def mirror(self, run_id: str, run_root: Path, state_file: Path, emit: Emit, **timing) -> SyncPair:
        """The pair node:<run_root> <-> <run_root> on this host (the run directory has the same path on both).
        Its per-file events are left out: the runs/ <-> work/ pair reports the same files a moment later."""
        def relay(kind: str, data: dict) -> None:
            if kind != "sync.file":
                emit(kind, data)
        return SyncPair(f"{run_id}@{self.node.name}", RemoteSide(self.backend, self.node, run_root),
                        LocalSide(run_root), state_file, relay, copier=self.copier, **timing)

    def close(self) -> None:
        subprocess.run([*self.ssh, "-O", "exit", self.host], capture_output=True, check=False, timeout=10)
        shutil.rmtree(self._sockets, ignore_errors=True)
