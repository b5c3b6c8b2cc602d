"""Leases: short, expiring locks that keep two processes from doing the same work at once (a beat tick's
housekeeping, one desktop's steps, one job's sync-event forwarding; one job's observation: observation.py).
Never a correctness lock: transitions are compare-and-set; a holder that dies only delays the work until its
lease expires."""

from __future__ import annotations

from typing import Any

from orchestrator.store.keys import KeyNames


class Lease:
    """One named lease: acquire() once, release() when done (release raises if it expired meanwhile)."""

    def __init__(self, lock: Any) -> None:
        self._lock = lock

    def acquire(self) -> bool:
        return bool(self._lock.acquire())

    def release(self) -> None:
        self._lock.release()


class Locks:
    """The store's locks family (`store.locks`)."""

    def __init__(self, client: Any, keys: KeyNames) -> None:
        self._r = client
        self._keys = keys

    def reconcile(self, lease: float) -> Lease:
        """A beat tick's housekeeping lease (killing leftovers on nodes that answer again; non-blocking: another
        worker already at it means skip this tick's turn)."""
        return Lease(self._r.lock(self._keys.reconcile_lock, timeout=lease, blocking=False))

    def desktop(self, job_id: str, timeout: float = 60, wait: float = 0) -> Lease:
        """One step at a time per desktop; waits up to `wait` seconds for it (0: not at all)."""
        return Lease(self._r.lock(self._keys.desktop_lock(job_id), timeout=timeout, blocking=wait > 0,
                                  blocking_timeout=wait or None))

    # -- forwarding a job's sync events: a short claim and the byte offset reached in the events file
    def claim_sync_forward(self, job_id: str, ms: int = 10_000) -> bool:
        """Claim the job's sync-event forwarding for `ms`; False while another worker forwards."""
        return bool(self._r.set(self._keys.sync_forward_lock(job_id), "1", nx=True, px=ms))

    def release_sync_forward(self, job_id: str) -> None:
        self._r.delete(self._keys.sync_forward_lock(job_id))

    def sync_forward_offset(self, job_id: str) -> int:
        return int(self._r.get(self._keys.sync_forward_offset(job_id)) or 0)

    def set_sync_forward_offset(self, job_id: str, offset: int) -> None:
        self._r.set(self._keys.sync_forward_offset(job_id), offset)
