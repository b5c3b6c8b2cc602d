"""The usage route: core-hours charged per job and per user, with desktop time shown apart (never charged)."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, Query

from orchestrator.api.access import ScopedClient
from orchestrator.api.app import API, client_for
from orchestrator.engine.usage import usage as compute_usage

router = APIRouter(prefix=API, tags=["usage"])


@router.get("/usage", summary="Core-hours per job and per user (yours; admins: everyone's, or one owner's); "
                              "desktop hours shown, not charged")
def usage(client: ScopedClient = Depends(client_for), owner: Optional[str] = Query(None, max_length=32),
          since: Optional[float] = Query(None, ge=0, description="epoch seconds: count usage from here"),
          until: Optional[float] = Query(None, ge=0, description="epoch seconds: count usage up to here"),
          limit: int = Query(1000, ge=1, le=10000, description="the newest jobs considered")) -> dict[str, Any]:
    if not client.account.admin:
        owner = client.account.name
    return compute_usage(client.store, owner, limit, since, until)
