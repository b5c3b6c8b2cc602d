"""Routes for notifications: the caller's webhooks and email addresses, signing secret, a test, the log."""

from __future__ import annotations

from typing import Any, Literal, Optional

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.api.deps import API, client_for
from orchestrator.control.service import ControlService
from orchestrator.model.notify import EVENTS, MAX_URL

router = APIRouter(prefix=API + "/notify", tags=["notify"])


class TargetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["webhook", "email"]
    address: str = Field(max_length=MAX_URL, description="the webhook's URL (http/https) or an email address")
    events: Optional[list[str]] = Field(None, max_length=len(EVENTS),
                                        description=f"events to send (default all): {', '.join(EVENTS)}")


@router.get("/targets", summary="Your webhooks and email addresses (admins: everyone's with ?all=true)")
def targets(client: ControlService = Depends(client_for), all: bool = False) -> list[dict[str, Any]]:  # noqa: A002
    return client.notify_targets(everyone=all)


@router.post("/targets", status_code=201, summary="Add a webhook or an email address")
def add_target(body: TargetBody, client: ControlService = Depends(client_for)) -> dict[str, Any]:
    return client.notify_add(body.kind, body.address, body.events)


@router.delete("/targets/{target_id}", summary="Remove a target by its id")
def remove_target(target_id: str, client: ControlService = Depends(client_for)) -> dict[str, Any]:
    return client.notify_remove(target_id)


@router.get("/secret", summary="Your webhook signing secret (HMAC-SHA256 key of X-E2E-Signature)")
def secret(client: ControlService = Depends(client_for)) -> dict[str, str]:
    return {"secret": client.notify_secret()}


@router.post("/secret", summary="Rotate your webhook signing secret")
def rotate_secret(client: ControlService = Depends(client_for)) -> dict[str, str]:
    return {"secret": client.notify_secret(rotate=True)}


@router.post("/test", summary="Send a test notification to each of your targets")
def test(client: ControlService = Depends(client_for)) -> list[dict[str, Any]]:
    return client.notify_test()


@router.get("/log", summary="The delivery log, newest first (yours; admins: everyone's)")
def delivery_log(client: ControlService = Depends(client_for), job: Optional[str] = Query(None, max_length=64),
                 limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
    return client.notify_log(job, limit)
