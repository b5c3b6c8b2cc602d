"""The user's ways into their jobs' desktops: the desktop itself (URL, password, SSH tunnel), the network rules
that admit a caller, and the SSH keys installed on their jobs' head nodes."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.desktop.access import (
    EVERYWHERE,
    MY_IP,
    client_address,
    normalise_rules,
    set_user_rules,
    user_rules,
)
from orchestrator.desktop.access import resolve as resolve_rules
from orchestrator.model.errors import UserError
from orchestrator.model.events import EventKind
from orchestrator.model.states import JobState
from orchestrator.store.users import hash_token

if TYPE_CHECKING:
    from orchestrator.control.service import ControlService

VNC_LOCAL_PORT = 5901  # the local end the printed tunnel instructions use
LINK_TTL = 60.0                  # seconds a one-time desktop link stays valid
DESKTOP_COOKIE_TTL = 12 * 3600.0  # seconds the browser's desktop cookie (from a link) stays valid
SHARE_TTL_MIN, SHARE_TTL_MAX = 60, 7 * 86400  # a view-only share link's life, seconds


class DesktopRefused(UserError):
    """The caller's address is outside the desktop's allowed networks (the API answers 403)."""

    def __init__(self, address: str | None, access: list[str], hint: bool = True) -> None:
        self.address, self.access = address, access
        super().__init__(f"your address {address or '(unknown)'} is outside the desktop's allowed networks "
                         f"({', '.join(access)})" + ("; change desktop.access or `e2e access`" if hint else ""))


# -- the user's SSH keys

def keys(service: ControlService) -> list[dict[str, Any]]:
    from orchestrator.desktop.keys import KeyRegistry

    return KeyRegistry(service.store).list(service.user)


def add_key(service: ControlService, text: str) -> dict[str, Any]:
    from orchestrator.desktop.keys import KeyRegistry

    key = KeyRegistry(service.store).add(service.user, text)
    return {"type": key.type, "bits": key.bits, "fingerprint": key.fingerprint, "comment": key.comment}


def remove_key(service: ControlService, which: str) -> list[str]:
    from orchestrator.desktop.keys import KeyRegistry

    return KeyRegistry(service.store).remove(service.user, which)


# -- access rules

def my_address(service: ControlService) -> str | None:
    # An API account connects from the request's address; the CLI runs on the engine's machine, where the
    # address Redis sees this process at is the one a desktop would see.
    return service.address if service.scoped else client_address(service.store)


def access_rules(service: ControlService) -> dict[str, Any]:
    rules = user_rules(service.store, service.user)
    return {"rules": rules, "shown": rules or [EVERYWHERE], "default": rules is None, "my_ip": my_address(service)}


def set_access_rules(service: ControlService, rules: list[str] | None) -> list[str] | None:
    if rules is not None:
        try:
            rules = normalise_rules(rules)
        except ValueError as exc:
            raise UserError(f"access: {exc}") from None
        rules = resolve_rules(rules, my_address(service) if MY_IP in rules else None)
    set_user_rules(service.store, service.user, rules)
    return rules


# -- desktops

def desktop_session(service: ControlService, job: str, wait: float = 0) -> Any:
    from orchestrator.desktop import connect

    return connect.desktop(service, job, wait=wait)


def check_desktop_access(service: ControlService, session: Any, entry: str, address: str | None = None) -> str:
    from orchestrator.desktop.access import allowed

    address = address or my_address(service)
    if address is None or not allowed(address, session.record.access or []):
        service.store.append_event(session.job_id, EventKind.ACCESS_REFUSED, {
            "entry": entry, "address": address, "reason": "outside the allowed networks", "user": service.user})
        raise DesktopRefused(address, session.record.access or [], hint=not service.scoped)
    return address


def desktop(service: ControlService, job: str, wait: float = 0) -> dict[str, Any]:
    d = desktop_session(service, job, wait)
    check_desktop_access(service, d, "api desktop" if service.scoped else "desktop url")
    user, host, port = d.ssh
    return {"id": d.job_id, "state": d.record.state, "url": d.url, "web_url": d.web_path, "vnc_port": d.vnc_port,
            "password": d.secret.password, "ssh": {"user": user, "host": host, "port": port},
            "tunnel": d.tunnel_instructions(VNC_LOCAL_PORT)}


def set_desktop_password(service: ControlService, job: str, password: str, view_password: str | None = None) -> int:
    from orchestrator.desktop import connect

    return connect.set_password(service, job, password, view_password)


def head_is_local(session: Any) -> bool:
    from orchestrator.cluster.base import Node
    from orchestrator.desktop.nodes import is_loopback

    _, host, _ = session.ssh
    return is_loopback(Node("head", host, 1, Path("/")))


def open_desktop_tunnel(service: ControlService, session: Any, local_port: int, identity: str | None = None) -> Any:
    from orchestrator.cluster.tunnel import Forwarder, engine_known_hosts
    from orchestrator.desktop.connect import open_tunnel

    ssh = open_tunnel(service, session, key_filename=identity,
                      known_hosts=engine_known_hosts(service.settings.inventory))
    try:
        return Forwarder(ssh, local_port, session.vnc_port, owns_client=True).start()
    except OSError as exc:
        ssh.close()
        raise UserError(f"cannot listen on 127.0.0.1:{local_port}: {exc.strerror or exc}; choose a port with "
                        "--local-port") from None


# -- the desktop through the API: job-scoped tokens, one-time links, the stream to Xvnc

def job_token(service: ControlService, job: str) -> dict[str, Any]:
    """A token for the job's owner bound to this job only (not admin); it ends with the job."""
    record = service.job(job)
    if record.state is JobState.TERMINATED:
        raise UserError(f"job {record.id} is terminated: a token for it would never work")
    token = service.store.users.issue_for_job(record.owner, record.id)
    return {"job": record.id, "user": record.owner, "token": token, "expires": "when the job is terminated"}


def desktop_link(service: ControlService, job: str, address: str | None = None) -> dict[str, Any]:
    """A one-time link to the desktop through the API: its code works once, within LINK_TTL seconds. The code
    (and the VNC password) ride after '#', so no server log ever sees them; the page posts the code."""
    d = desktop_session(service, job)
    check_desktop_access(service, d, "api desktop link", address)
    code = secrets.token_urlsafe(24)
    service.store.desktop_passes.put(d.job_id, "link", hash_token(code), service.user, LINK_TTL)
    return {"id": d.job_id, "path": f"/desktop/{d.job_id}/link#code={code}&{d.web_fragment}",
            "expires_in": LINK_TTL}


def desktop_share(service: ControlService, job: str, expires_in: int = 3600,
                  address: str | None = None) -> dict[str, Any]:
    """A view-only link to the desktop that the owner gives another person: it opens noVNC through the API
    with the desktop's view-only password (made now if the desktop has none), as often as needed until it
    expires. Xvnc itself makes a view-only login view-only: its keys, pointer and clipboard are ignored."""
    from orchestrator.desktop import connect
    from orchestrator.desktop.vncauth import generate_password

    if isinstance(expires_in, bool) or not isinstance(expires_in, int) \
            or not SHARE_TTL_MIN <= expires_in <= SHARE_TTL_MAX:
        raise UserError(f"expires_in: seconds from {SHARE_TTL_MIN} to {SHARE_TTL_MAX} (7 days), got {expires_in!r}")
    d = desktop_session(service, job)
    check_desktop_access(service, d, "api desktop share", address)
    view = d.secret.view_password
    if not view:
        view = generate_password()
        connect.set_password(service, d.job_id, d.secret.password, view)  # waits until the head node uses it
    code = secrets.token_urlsafe(24)
    service.store.desktop_passes.put(d.job_id, "share", hash_token(code), service.user, expires_in)
    service.store.append_event(d.job_id, EventKind.CONTROL, {
        "action": "desktop-share", "by": service.user, "expires_in": expires_in, "view_only": True})
    return {"id": d.job_id, "path": f"/desktop/{d.job_id}/link#code={code}&{d.view_fragment(view)}",
            "expires_in": expires_in, "view_only": True}


def redeem_desktop_link(store: Any, job_id: str, code: str) -> str | None:
    """Exchange a link's code for a desktop cookie value; None when unknown, used or expired. A one-time link
    works once; a share link until it expires (its cookie not beyond that)."""
    if not code:
        return None
    digest = hash_token(code)
    user, ttl = store.desktop_passes.take(job_id, "link", digest), DESKTOP_COOKIE_TTL
    if user is None:
        user, left = store.desktop_passes.peek_with_ttl(job_id, "share", digest)
        ttl = min(ttl, left or 0)
    if user is None or ttl <= 0:
        return None
    cookie = secrets.token_urlsafe(32)
    store.desktop_passes.put(job_id, "cookie", hash_token(cookie), user, ttl)
    return cookie


def desktop_cookie_user(store: Any, job_id: str, cookie: str | None) -> str | None:
    return store.desktop_passes.peek(job_id, "cookie", hash_token(cookie)) if cookie else None


def open_desktop_stream(service: ControlService, job: str, address: str | None) -> Any:
    """A blocking byte stream (recv, sendall, close) to the job's Xvnc, for the API's WebSocket proxy, after
    the CIDR check on `address`. Straight to Xvnc's loopback port through the backend (a direct-tcpip channel
    on ssh), not through the node's gateway: the gateway's CIDR rules would have to admit the API's own
    address, and its port need not be reachable from anywhere. Xvnc still asks for the VNC password."""
    from orchestrator.cluster import get_backend
    from orchestrator.desktop.nodes import open_tcp

    d = desktop_session(service, job)
    check_desktop_access(service, d, "api desktop proxy", address)
    record = service.store.get_job(d.job_id)
    backend = get_backend(record.backend, service.settings)
    head = backend.nodes_named(record.nodes[:1])
    if not head:
        raise UserError(f"job {d.job_id}: its head node is not in the {record.backend} backend's inventory")
    stream = open_tcp(backend, head[0], d.vnc_port)
    stream.settimeout(None)  # a desktop may sit idle for hours
    return stream
