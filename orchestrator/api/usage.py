"""The usage route: core-hours charged per job and per user, with desktop time shown apart (never charged)."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, Query

from orchestrator.api.deps import API, client_for
from orchestrator.control.service import ControlService

router = APIRouter(prefix=API, tags=["usage"])


@router.get("/usage", summary="Core-hours per job and per user (yours; admins: everyone's, or one owner's); "
                              "desktop hours shown, not charged")
def usage(client: ControlService = Depends(client_for), owner: Optional[str] = Query(None, max_length=32),
          since: Optional[float] = Query(None, ge=0, description="epoch seconds: count usage from here"),
          until: Optional[float] = Query(None, ge=0, description="epoch seconds: count usage up to here"),
          limit: int = Query(1000, ge=1, le=10000, description="the newest jobs considered")) -> dict[str, Any]:
    return client.usage(owner, limit, since, until)
