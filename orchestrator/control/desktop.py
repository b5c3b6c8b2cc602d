"""The user's ways into their jobs' desktops: the desktop itself (URL, password, SSH tunnel), the network rules
that admit a caller, and the SSH keys installed on their jobs' head nodes."""

from __future__ import annotations

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

if TYPE_CHECKING:
    from orchestrator.control.service import ControlService

VNC_LOCAL_PORT = 5901  # the local end the printed tunnel instructions use


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
    return {"id": d.job_id, "state": d.record.state, "url": d.url, "vnc_port": d.vnc_port,
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
