"""Routes around jobs: who am I, nodes (admins drain them), SSH keys, desktop access rules, a job's desktop."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.api import audit
from orchestrator.api.deps import API, admin_client, client_for
from orchestrator.control.service import ControlService
from orchestrator.desktop.access import normalise_rules

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
def desktop(job: str, client: ControlService = Depends(client_for),
            wait: float = Query(0, ge=0, le=30)) -> dict[str, Any]:
    return client.desktop(job, wait=wait)
