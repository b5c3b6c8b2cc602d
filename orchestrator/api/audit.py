"""The API's audit trail of refusals: unknown or revoked tokens, other users' jobs, admin-only calls.

Refusals tied to a job also go into that job's own events (its owner sees who tried); all go into one
capped stream admins read (GET /api/v1/audit). Tokens themselves are never recorded."""

from __future__ import annotations

import json
import time
from typing import Any

MAXLEN = 100_000


def audit_key(prefix: str) -> str:
    return f"{prefix}:audit"


def record(store: Any, reason: str, **data: Any) -> None:
    """One refusal: why, and who/what/where (user, address, method, path, job)."""
    entry = {"reason": reason, "ts": time.time(), **{k: v for k, v in data.items() if v is not None}}
    store.r.xadd(audit_key(store.prefix), {"data": json.dumps(entry, default=str)}, maxlen=MAXLEN,
                 approximate=True)


def recent(store: Any, count: int = 200) -> list[dict[str, Any]]:
    """The newest refusals first."""
    rows = store.r.xrevrange(audit_key(store.prefix), count=count)
    return [{"id": entry_id, **json.loads(fields["data"])} for entry_id, fields in rows]
