"""Sweeps: member jobs sharing a sweep id (JobStore.create_job adds each member, from its `sweep` field)."""

from __future__ import annotations

from typing import Any

from orchestrator.store.keys import KeyNames


class Sweeps:
    """JobStore's sweep reads (a mixin sharing its connection and key names)."""

    _r: Any
    _keys: KeyNames

    def sweep_members(self, sweep_id: str) -> list[str]:
        return self._r.lrange(self._keys.sweep(sweep_id), 0, -1)

    def sweeps(self, limit: int = 100) -> list[str]:
        """Sweep ids, newest first."""
        return self._r.zrevrange(self._keys.sweeps, 0, limit - 1)
