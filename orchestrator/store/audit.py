"""The audit trail of refusals (unknown or revoked tokens, other users' jobs, admin-only calls): one capped
stream admins read. Tokens themselves are never recorded."""

from __future__ import annotations

import json
import time
from typing import Any

from orchestrator.store.keys import KeyNames

MAXLEN = 100_000


class Audit:
    """The store's audit family (`store.audit`)."""

    def __init__(self, client: Any, keys: KeyNames) -> None:
        self._r = client
        self._keys = keys

    def record(self, reason: str, **data: Any) -> None:
        """One refusal: why, and who/what/where (user, address, method, path, job); None values left out."""
        entry = {"reason": reason, "ts": time.time(), **{k: v for k, v in data.items() if v is not None}}
        self._r.xadd(self._keys.audit, {"data": json.dumps(entry, default=str)}, maxlen=MAXLEN, approximate=True)

    def recent(self, count: int = 200) -> list[dict[str, Any]]:
        """The newest refusals first."""
        rows = self._r.xrevrange(self._keys.audit, count=count)
        return [{"id": entry_id, **json.loads(fields["data"])} for entry_id, fields in rows]
