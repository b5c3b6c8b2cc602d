"""SshKeysService: puts the job owner's registered SSH keys, CIDR-restricted, into the head node's authorized_keys.

On real nodes with jobs run as their owners, that is the owner's own ~/.ssh/authorized_keys, read and written
as the owner (never the engine login's file, and never root following a link the owner put in its home).
"""

from __future__ import annotations

import hashlib

from orchestrator.cluster.identity import account_for
from orchestrator.desktop import nodes
from orchestrator.desktop.access import EVERYWHERE, resolve
from orchestrator.desktop.keys import KeyRegistry, authorized_keys_block, merge_block
from orchestrator.model.errors import UserError
from orchestrator.model.events import EventKind
from orchestrator.model.services import JobService, ServiceContext


class SshKeysService(JobService):
    """Keys live in a managed block of the job user's authorized_keys while the cluster is up, and go after.
    Keys added or removed while the job runs follow at its next look (a reconcile interval, or a batch job's
    safety interval)."""

    name = "ssh-keys"

    def start(self, ctx: ServiceContext) -> None:
        self._sync(ctx, force=True)

    def supervise(self, ctx: ServiceContext) -> None:
        self._sync(ctx, force=False)

    def stop(self, ctx: ServiceContext) -> bool:
        self._write(ctx, "")
        ctx.store.update_job(ctx.job_id, ssh_keys="")
        return True

    def _sync(self, ctx: ServiceContext, force: bool) -> None:
        keys = KeyRegistry(ctx.store).keys(ctx.job.owner)
        try:
            cidrs = resolve(ctx.spec.desktop.access or [EVERYWHERE])
        except UserError as exc:  # an unresolvable rule: no key gets in rather than every address
            cidrs, keys, why = [], [], exc.message
        else:
            why = None
        block = authorized_keys_block(keys, cidrs) if keys else ""
        digest = hashlib.sha256(block.encode()).hexdigest()[:16]
        if not force and ctx.store.get_job(ctx.job_id).ssh_keys == digest:
            return
        if why:
            ctx.store.append_event(ctx.job_id, EventKind.WARNING, {"service": self.name,
                                                                   "message": f"SSH keys not installed: {why}"})
        self._write(ctx, block)
        ctx.store.update_job(ctx.job_id, ssh_keys=digest)

    def _write(self, ctx: ServiceContext, block: str) -> None:
        # A virtual node's home is the engine's stand-in for one (local backend): no account there.
        owner = None if nodes.own_home(ctx.backend) else account_for(ctx.job.account)
        ssh_dir = nodes.home_dir(ctx.backend, ctx.head, owner) / ".ssh"
        path = ssh_dir / "authorized_keys"
        existing = nodes.read_private(ctx.backend, ctx.head, path, owner)
        if existing is None and not block:
            return
        nodes.make_dirs(ctx.backend, ctx.head, ssh_dir, 0o700, owner)
        # private: sshd (StrictModes) ignores an authorized_keys others can write
        merged = merge_block((existing or b"").decode(), block).encode()
        nodes.write_private(ctx.backend, ctx.head, path, merged, owner)
