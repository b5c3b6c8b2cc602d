"""Routes around jobs: who am I, nodes (admins drain them), SSH keys, desktop access rules, a job's desktop."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.api import audit
from orchestrator.api.deps import API, TokenWatch, admin_client, client_for
from orchestrator.control.desktop import SHARE_TTL_MAX, SHARE_TTL_MIN
from orchestrator.control.service import ControlService
from orchestrator.desktop.access import normalise_rules
from orchestrator.model.errors import InvalidState

DESKTOP_POLL = 0.25  # seconds between looks at a starting desktop

router = APIRouter(prefix=API, tags=["cluster"])


class KeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(max_length=16384, description="one OpenSSH public key line (ssh-ed25519 AAAA... comment)")


class AccessBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: Optional[list[str]] = Field(None, max_length=64,
                                       description="everywhere, my-ip, or IPv4/IPv6 CIDRs; null clears")

    @field_validator("rules")
    @classmethod
    def _rules(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        return None if value is None else normalise_rules(value)  # ValueError: a 422 naming `rules`


class DrainBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=300)


@router.get("/me", summary="The caller: user name, whether an admin, the OS account their jobs run as")
def me(client: ControlService = Depends(client_for)) -> dict[str, Any]:
    return {"name": client.user, "admin": client.admin, "os_user": client.store.users.get(client.user).os_user}


@router.get("/nodes", summary="Every node: free, leased (to which job) or drained; load; reachable")
def nodes(client: ControlService = Depends(client_for), backend: Optional[str] = Query(None, max_length=16)) -> list:
    return client.nodes(backend)


@router.post("/nodes/{node}/drain", summary="Admins: take a node out of service")
def drain_node(node: str, body: Optional[DrainBody] = None, backend: Optional[str] = Query(None, max_length=16),
               client: ControlService = Depends(admin_client)) -> dict[str, Any]:
    return client.drain(node, body.reason if body else "", backend)


@router.post("/nodes/{node}/undrain", summary="Admins: put a drained node back into service")
def undrain_node(node: str, backend: Optional[str] = Query(None, max_length=16), force: bool = False,
                 client: ControlService = Depends(admin_client)) -> dict[str, Any]:
    killed, warning = client.undrain(node, force, backend)
    return {"node": node, "killed": killed, "warning": warning}


@router.get("/audit", summary="Admins: the newest refused requests (bad tokens, others' jobs, admin-only)")
def audit_trail(client: ControlService = Depends(admin_client), limit: int = Query(200, ge=1, le=10000)) -> list:
    return audit.recent(client.store, limit)


@router.get("/keys", summary="Your registered SSH public keys")
def keys(client: ControlService = Depends(client_for)) -> list[dict[str, Any]]:
    return client.keys()


@router.post("/keys", status_code=201, summary="Register an SSH public key (installed on your jobs' head nodes)")
def add_key(body: KeyBody, client: ControlService = Depends(client_for)) -> dict[str, Any]:
    return client.add_key(body.key)


@router.delete("/keys/{which:path}", summary="Remove a key by fingerprint (SHA256:...) or comment")
def remove_key(which: str, client: ControlService = Depends(client_for)) -> dict[str, Any]:
    return {"removed": client.remove_key(which)}


@router.get("/access", summary="Your default desktop access rules (CIDRs)")
def get_access(client: ControlService = Depends(client_for)) -> dict[str, Any]:
    return {"rules": client.access_rules()["rules"]}


@router.put("/access", summary="Set (or clear, with null) your default desktop access rules")
def put_access(body: AccessBody, client: ControlService = Depends(client_for)) -> dict[str, Any]:
    """my-ip is fixed to the caller's address now, as `e2e access set` does."""
    return {"rules": client.set_access_rules(body.rules)}


@router.get("/jobs/{job}/desktop", summary="The job's desktop: URL with token and password, tunnel, VNC port")
async def desktop(job: str, request: Request, client: ControlService = Depends(client_for),
                  wait: float = Query(0, ge=0, le=30)) -> dict[str, Any]:
    """With `wait` (seconds), waits for a starting desktop; a user may have E2E_API_MAX_DESKTOP_WAITS waits
    at once (429 beyond), and a token revoked meanwhile ends the wait (401)."""
    # polled from here: each look is a short thread hop, and between looks the request holds no thread (a sync
    # route held one for up to 30 s)
    if not wait:
        return await asyncio.to_thread(client.desktop, job, 0)
    with request.app.state.engine.desktop_waits.held(client.user):
        return await _wait_for_desktop(request, client, job, wait)


@router.post("/jobs/{job}/desktop/link", status_code=201,
             summary="A one-time link (60 s, single use) to the desktop through the API; the code is after '#'")
def desktop_link(job: str, request: Request, client: ControlService = Depends(client_for)) -> dict[str, Any]:
    return client.desktop_link(job, request.client.host if request.client else None)


class ShareBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expires_in: int = Field(3600, ge=SHARE_TTL_MIN, le=SHARE_TTL_MAX,
                            description="seconds the link works (60 s to 7 days)")


@router.post("/jobs/{job}/desktop/share", status_code=201,
             summary="A view-only link to the desktop for another person, reusable until it expires")
def desktop_share(job: str, body: ShareBody, request: Request,
                  client: ControlService = Depends(client_for)) -> dict[str, Any]:
    return client.desktop_share(job, body.expires_in, request.client.host if request.client else None)


def _still_starting(client: ControlService, job: str) -> bool:
    """Worth waiting for: the desktop is starting (or not yet started) on a job that is coming up, the rule
    desktop.connect.desktop waits by."""
    from orchestrator.desktop.service import STARTING, desktop_record
    from orchestrator.model.states import JobState

    record = client.store.get_job(client.resolve(job))
    if not record.spec.get("desktop", {}).get("enabled", True):
        return False
    return (desktop_record(record).state in (STARTING, None)
            and record.state in (JobState.QUEUED, JobState.PROVISIONING, JobState.UP))


async def _wait_for_desktop(request: Request, client: ControlService, job: str, wait: float) -> dict[str, Any]:
    deadline, watch = time.monotonic() + wait, TokenWatch(request)
    while True:
        try:
            return await asyncio.to_thread(client.desktop, job, 0)
        except InvalidState:
            if time.monotonic() >= deadline or not await asyncio.to_thread(_still_starting, client, job):
                raise
        if not watch.still_valid():
            raise HTTPException(401, "token revoked while waiting for the desktop",
                                headers={"WWW-Authenticate": "Bearer"})
        await asyncio.sleep(min(DESKTOP_POLL, max(0.0, deadline - time.monotonic())))
