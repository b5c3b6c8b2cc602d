"""The API's audit trail of refusals: unknown or revoked tokens, other users' jobs, admin-only calls.

Refusals tied to a job also go into that job's own events (its owner sees who tried); all go into one
capped stream admins read (GET /api/v1/audit), kept by the store's audit family. Tokens themselves are never
recorded."""

from __future__ import annotations

from typing import Any


def record(store: Any, reason: str, **data: Any) -> None:
    """One refusal: why, and who/what/where (user, address, method, path, job)."""
    store.audit.record(reason, **data)


def recent(store: Any, count: int = 200) -> list[dict[str, Any]]:
    """The newest refusals first."""
    return store.audit.recent(count)
