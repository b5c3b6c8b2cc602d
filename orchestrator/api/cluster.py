"""Routes around jobs: who am I, nodes (admins drain them), SSH keys, desktop access rules, a job's desktop."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.api import audit
from orchestrator.api.access import ScopedClient
from orchestrator.api.app import API, admin_client, client_for
from orchestrator.cluster import get_backend
from orchestrator.desktop import connect
from orchestrator.desktop.access import MY_IP, allowed, normalise_rules, resolve, set_user_rules, user_rules
from orchestrator.engine.nodes_admin import drain, node_rows, undrain
from orchestrator.model.errors import UserError
from orchestrator.model.events import EventKind

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


@router.get("/me", summary="The caller: user name and whether an admin")
def me(client: ScopedClient = Depends(client_for)) -> dict[str, Any]:
    return {"name": client.account.name, "admin": client.account.admin}


def _backend(client: ScopedClient, name: Optional[str]):
    if name not in (None, "local", "ssh", "slurm"):
        raise UserError(f"backend {name!r}: choose local, ssh or slurm")
    return get_backend(name or ("ssh" if client.settings.inventory else "local"), client.settings)


@router.get("/nodes", summary="Every node: free, leased (to which job) or drained; load; reachable")
def nodes(client: ScopedClient = Depends(client_for), backend: Optional[str] = Query(None, max_length=16)) -> list:
    chosen = _backend(client, backend)
    rows = node_rows(chosen, client.store.leases(chosen.name), client.store.drained(chosen.name))
    if not client.account.admin:  # others' job ids are not for everyone to see
        mine = {r["id"] for r in client.jobs(1000)}
        for row in rows:
            if row["job"] and row["job"] not in mine:
                row["job"] = "(another user's)"
            if row["drained"]:
                row["drained"] = {"reason": row["drained"].get("reason")}
    return rows


@router.post("/nodes/{node}/drain", summary="Admins: take a node out of service")
def drain_node(node: str, body: Optional[DrainBody] = None, backend: Optional[str] = Query(None, max_length=16),
               client: ScopedClient = Depends(admin_client)) -> dict[str, Any]:
    return drain(client.store, _backend(client, backend), node, client.user, body.reason if body else "")


@router.post("/nodes/{node}/undrain", summary="Admins: put a drained node back into service")
def undrain_node(node: str, backend: Optional[str] = Query(None, max_length=16), force: bool = False,
                 client: ScopedClient = Depends(admin_client)) -> dict[str, Any]:
    killed, warning = undrain(client.store, _backend(client, backend), node, force)
    return {"node": node, "killed": killed, "warning": warning}


@router.get("/audit", summary="Admins: the newest refused requests (bad tokens, others' jobs, admin-only)")
def audit_trail(client: ScopedClient = Depends(admin_client), limit: int = Query(200, ge=1, le=10000)) -> list:
    return audit.recent(client.store, limit)


@router.get("/keys", summary="Your registered SSH public keys")
def keys(client: ScopedClient = Depends(client_for)) -> list[dict[str, Any]]:
    return client.keys()


@router.post("/keys", status_code=201, summary="Register an SSH public key (installed on your jobs' head nodes)")
def add_key(body: KeyBody, client: ScopedClient = Depends(client_for)) -> dict[str, Any]:
    return client.add_key(body.key)


@router.delete("/keys/{which:path}", summary="Remove a key by fingerprint (SHA256:...) or comment")
def remove_key(which: str, client: ScopedClient = Depends(client_for)) -> dict[str, Any]:
    return {"removed": client.remove_key(which)}


@router.get("/access", summary="Your default desktop access rules (CIDRs)")
def get_access(client: ScopedClient = Depends(client_for)) -> dict[str, Any]:
    return {"rules": user_rules(client.store, client.user)}


@router.put("/access", summary="Set (or clear, with null) your default desktop access rules")
def put_access(body: AccessBody, client: ScopedClient = Depends(client_for)) -> dict[str, Any]:
    """my-ip is fixed to the caller's address now, as `e2e access set` does."""
    rules = body.rules if body.rules is None or MY_IP not in body.rules else resolve(body.rules, client.address)
    set_user_rules(client.store, client.user, rules)
    return {"rules": rules}


@router.get("/jobs/{job}/desktop", summary="The job's desktop: URL with token and password, tunnel, VNC port")
def desktop(job: str, request: Request, client: ScopedClient = Depends(client_for),
            wait: float = Query(0, ge=0, le=30)) -> dict[str, Any]:
    d = connect.desktop(client, job, wait=wait)
    address = request.client.host if request.client else None
    if address is None or not allowed(address, d.record.get("access") or []):
        client.store.append_event(d.job_id, EventKind.ACCESS_REFUSED, {
            "entry": "api desktop", "address": address, "reason": "outside the allowed networks",
            "user": client.user})
        raise HTTPException(403, f"your address {address or '(unknown)'} is outside the desktop's allowed "
                                 f"networks ({', '.join(d.record.get('access') or [])})")
    user, host, port = d.ssh
    return {"id": d.job_id, "state": d.record.get("state"), "url": d.url, "vnc_port": d.vnc_port,
            "password": d.secret.password, "ssh": {"user": user, "host": host, "port": port},
            "tunnel": d.tunnel_instructions(5901)}
