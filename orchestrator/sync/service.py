"""The sync as a per-job service: starts the job's sync process, restarts it, forwards its events, stops it.

Every call is short: the process runs detached on the head node and is controlled through small files in
the job's .sync/ folder, read and written through the backend (so the same code drives a remote node).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.cluster import joblogin
from orchestrator.cluster.base import ClusterBackend, Node
from orchestrator.cluster.identity import account_for, switches
from orchestrator.cluster.local import LocalBackend
from orchestrator.cluster.ssh import SSHBackend
from orchestrator.model.errors import BackendError
from orchestrator.model.events import EventKind
from orchestrator.model.identity import Account
from orchestrator.model.services import JobService, ServiceContext
from orchestrator.model.states import SyncState

log = logging.getLogger(__name__)

SPAWN_GRACE = 10.0      # seconds a just-spawned process has to write its pid before another is spawned
STOP_TIMEOUT = 600.0    # a final sync that takes longer is abandoned (with a warning) so terminate finishes
FORWARD_CHUNK = 1 << 20
RESCAN_LOCAL = 3.0      # inotify sees every write: the rescan is only a safety net
RESCAN_SHARED = 1.0     # writes made on other hosts (NFS) raise no inotify event here: rescan often


@dataclass(frozen=True)
class _Host:
    """Where the sync process runs and how its control files are reached: the machine holding the job's
    work folder, which also sees the run directories at the same path (local backend, shared storage) or
    reaches them over ssh (nodes with their own disks)."""

    backend: ClusterBackend
    node: Node
    rescan: float   # seconds between full rescans: short where inotify cannot see the writers (NFS)

    def read_bytes(self, path, offset: int = 0, limit: int | None = None) -> bytes | None:
        return self.backend.read_bytes(self.node, path, offset, limit)

    def write_bytes(self, path, data: bytes) -> None:
        self.backend.write_bytes(self.node, path, data)

    def group_alive(self, pgid: int) -> bool:
        return self.backend.group_alive(self.node, pgid)


def shares_storage(ctx: ServiceContext) -> bool:
    """Whether the run directories are the head node's own files at the same path (no staging)."""
    backend = ctx.backend
    if backend.name in ("local", "slurm"):  # local: one machine; slurm: shared storage is required
        return True
    spec = getattr(backend, "spec", None)   # ssh: per node, from the inventory
    return bool(spec and spec(ctx.head).shared_storage)


class SyncService(JobService):
    name = "sync"

    def wanted(self, ctx: ServiceContext) -> bool:
        """Only where something consumes the copy: a process per job that nobody reads costs ~50 MB and a
        supervise call per pass, for nothing.
        - Nodes with their own disks (ssh): always. The process lists the node's run directories over ssh and
          mirrors them into the engine's runs/ (orchestrator/sync/nodelink.py): the copy a restart on another
          node starts from when the node dies before its run ends (and stage-out never happens).
        - Shared storage: only for a desktop, whose apps look at the work folder. Without one, the run
          directories are the engine's own files already: the live file listing reads them (runs/<run>/)."""
        if not shares_storage(ctx):
            return ctx.backend.name == "ssh"
        return bool(ctx.spec.desktop.enabled)

    # -- the contract
    def start(self, ctx: ServiceContext) -> None:
        sp = ctx.paths.sync
        host = self._host(ctx)
        for folder in (ctx.paths.work, sp.root):  # the sync process (the job's owner) writes into both
            if not folder.is_dir():
                host.backend.make_dirs(host.node, folder, 0o700)  # type: ignore[attr-defined]
                host.backend.hand_over(host.node, folder, self._account(ctx))
        self._heartbeat(ctx)
        if not self._needs_spawn(ctx):
            return
        # A fresh start while the job is UP: forget a stop asked of an earlier process.
        self._host(ctx).write_bytes(sp.stop_request, b"")
        self._host(ctx).write_bytes(sp.done, b"")
        self._spawn(ctx)

    def supervise(self, ctx: ServiceContext) -> None:
        self._heartbeat(ctx)
        self.forward_events(ctx)
        if self._stop_requested_at(ctx) is not None or not self._needs_spawn(ctx):
            return
        ctx.store.append_event(ctx.job_id, EventKind.SYNC_STATE, {"state": SyncState.RESTARTED.value,
                                                                  "message": "the sync process had died"})
        self._spawn(ctx)

    def stop(self, ctx: ServiceContext) -> bool:
        sp = ctx.paths.sync
        self._heartbeat(ctx)
        self.forward_events(ctx)
        alive = self._alive(ctx)
        if self._done(ctx) and not alive:
            self.forward_events(ctx)
            self._revoke_node_login(ctx)
            return True
        asked = self._stop_requested_at(ctx)
        if asked is None:
            self._host(ctx).write_bytes(sp.stop_request, f"{time.time():.3f}".encode())
            asked = time.time()
        if time.time() - asked > STOP_TIMEOUT:
            ctx.store.append_event(ctx.job_id, EventKind.WARNING, {
                "service": self.name, "message": f"final sync not finished after {STOP_TIMEOUT:.0f}s: given up"})
            self._revoke_node_login(ctx)
            return True
        if not self._done(ctx) and self._needs_spawn(ctx):
            self._spawn(ctx)  # it died: a new one sees the stop request and does the final pass
        return False

    # -- events: the process appends JSON lines; forwarded once each (offset and a short lock in Redis)
    def forward_events(self, ctx: ServiceContext) -> int:
        store = ctx.store
        if not store.locks.claim_sync_forward(ctx.job_id, ms=10_000):
            return 0  # another worker is forwarding right now
        try:
            offset = store.locks.sync_forward_offset(ctx.job_id)
            data = self._host(ctx).read_bytes(ctx.paths.sync.events, offset, FORWARD_CHUNK) or b""
            cut = data.rfind(b"\n") + 1
            sent = 0
            for line in data[:cut].splitlines():
                try:
                    entry = json.loads(line)
                    kind = EventKind(entry["kind"])
                except (ValueError, KeyError):
                    log.warning("skipping a malformed sync event line of job %s", ctx.job_id)
                    continue
                store.append_event(ctx.job_id, kind, entry["data"])
                sent += 1
            if cut:
                store.locks.set_sync_forward_offset(ctx.job_id, offset + cut)
            return sent
        finally:
            store.locks.release_sync_forward(ctx.job_id)

    # -- helpers
    def _host(self, ctx: ServiceContext) -> _Host:
        if ctx.backend.name == "local":
            return _Host(ctx.backend, ctx.head, RESCAN_LOCAL)
        # Remote nodes: the process runs beside the engine, where the work folder is (the nodes need no
        # Python); their writes reach it through the shared filesystem, or over ssh for nodes with own disks.
        return _Host(LocalBackend(ctx.settings), ctx.head, RESCAN_SHARED)

    def _spawn(self, ctx: ServiceContext) -> None:
        sp = ctx.paths.sync
        self._host(ctx).write_bytes(sp.pid, b"")  # the new process writes its own
        self._host(ctx).write_bytes(sp.spawned_at, f"{time.time():.3f}".encode())
        # The shell hands the process its log as stdout/stderr at once: a spawner waiting for its stderr
        # to close (to report start-up errors) returns immediately. Paths travel as arguments, never as code.
        host = self._host(ctx)
        argv = ["/bin/sh", "-c", 'log=$1; shift; exec "$@" >>"$log" 2>&1 </dev/null', "e2e-sync", str(sp.log),
                sys.executable, "-m", "orchestrator.sync.daemon", "--job-dir", str(ctx.paths.root),
                "--rescan", str(host.rescan)]
        account = self._account(ctx)
        if not shares_storage(ctx):  # the runs execute on the head node of the job, on its own disk
            argv += ["--node", ctx.head.name, "--inventory", str(self._node_login(ctx, account))]
        # The process gets nothing of the engine's environment (no Redis URL: it reports through events.jsonl,
        # which supervise forwards), only its arguments; it runs as the job's owner.
        host.backend.spawn_detached(host.node, argv, cwd=ctx.paths.root, account=account)

    @staticmethod
    def _job_login(ctx: ServiceContext, account: Account | None) -> SSHBackend | None:
        """The ssh backend when the process needs a login of the job's own to its node: a root engine running
        the job as another account than the node's login, on a node without shared storage; else None."""
        backend = ctx.backend
        if account is None or not switches(account) or not isinstance(backend, SSHBackend) \
                or shares_storage(ctx) or not backend.needs_drop(ctx.head, account):
            return None
        return backend

    def _node_login(self, ctx: ServiceContext, account: Account | None) -> Path:
        """The inventory the process reaches the node with: with a job login (see _job_login), a one-node
        inventory of the job's own key, authorised for the account on the node while the job lives (the
        process runs as the account and never holds the engine's key); otherwise the engine's own."""
        backend = self._job_login(ctx, account)
        if backend is None or account is None:
            return Path(ctx.settings.inventory)  # single-user, or the engine's login is the job's account
        inventory = ctx.paths.sync.root / joblogin.INVENTORY
        return joblogin.grant(backend, ctx.head, account, ctx.job_id, ctx.paths.sync.root) \
            if not inventory.is_file() else inventory

    def _revoke_node_login(self, ctx: ServiceContext) -> None:
        account = self._account(ctx)
        backend = self._job_login(ctx, account)
        if backend is None or account is None:
            return
        try:
            joblogin.revoke(backend, ctx.head, account, ctx.job_id)
        except BackendError as exc:  # the node is gone: its authorized_keys with it, or revoked on its return
            ctx.store.append_event(ctx.job_id, EventKind.WARNING, {
                "service": "sync", "message": f"the job's node login on {ctx.head.name} was not revoked: {exc}"})
            return
        (ctx.paths.sync.root / joblogin.INVENTORY).unlink(missing_ok=True)

    @staticmethod
    def _account(ctx: ServiceContext) -> Account | None:
        return account_for(ctx.job.account)

    def _heartbeat(self, ctx: ServiceContext) -> None:
        """The process leaves when the engine stops calling (no orphans once the engine is gone)."""
        self._host(ctx).write_bytes(ctx.paths.sync.heartbeat, f"{time.time():.3f}".encode())

    def _pid(self, ctx: ServiceContext) -> int | None:
        pid = (self._host(ctx).read_bytes(ctx.paths.sync.pid) or b"").strip()
        return int(pid) if pid.isdigit() else None

    def _alive(self, ctx: ServiceContext) -> bool:
        pid = self._pid(ctx)
        return pid is not None and self._host(ctx).group_alive(pid)

    def _needs_spawn(self, ctx: ServiceContext) -> bool:
        """Nothing runs: no live process, and none just spawned that has not written its pid yet."""
        pid = self._pid(ctx)
        if pid is not None:
            return not self._host(ctx).group_alive(pid)
        when = _number(self._host(ctx).read_bytes(ctx.paths.sync.spawned_at))
        return when is None or time.time() - when > SPAWN_GRACE

    def _stop_requested_at(self, ctx: ServiceContext) -> float | None:
        return _number(self._host(ctx).read_bytes(ctx.paths.sync.stop_request))

    def _done(self, ctx: ServiceContext) -> bool:
        return _number(self._host(ctx).read_bytes(ctx.paths.sync.done)) is not None


def _number(data: bytes | None) -> float | None:
    try:
        return float(data) if data and data.strip() else None
    except ValueError:
        return None
