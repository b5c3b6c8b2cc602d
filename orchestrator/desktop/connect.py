"""The user's side of a desktop: its URL with token and password, native-viewer files, tunnels, passwords."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from orchestrator.desktop.access import allowed, client_address
from orchestrator.desktop.secrets import DesktopSecret, DesktopSecrets
from orchestrator.desktop.service import FAILED, READY, STARTING, desktop_record
from orchestrator.desktop.vncauth import check_password, passwd_file
from orchestrator.model.errors import InvalidState, UserError
from orchestrator.model.events import EventKind
from orchestrator.model.records import DesktopRecord
from orchestrator.model.states import JobState

LOCAL_TUNNEL_PORTS = (5901, 5900)  # what VNC viewers call display :1 and :0


@dataclass(frozen=True)
class Desktop:
    """A ready desktop as its user sees it (holds the secret: print it to the user, never log it)."""

    job_id: str
    record: DesktopRecord
    secret: DesktopSecret

    @property
    def url(self) -> str:
        """noVNC with everything after '#': a fragment never reaches a server or its logs."""
        path = quote(f"websockify?token={self.secret.token}", safe="")
        return (f"{self.record.url}#autoconnect=1&resize=remote&reconnect=1&path={path}"
                f"&password={quote(self.secret.password, safe='')}")

    @property
    def web_fragment(self) -> str:
        """noVNC's settings for the API's route: it connects back to the page's own host, never the node; the
        desktop takes the browser window's size (resize=remote: Xvnc accepts SetDesktopSize)."""
        return self._api_fragment(self.secret.password, "resize=remote")

    def view_fragment(self, view_password: str) -> str:
        """The API route's settings for a view-only viewer: the view-only password, and noVNC sends no input
        (Xvnc ignores a view-only login's input anyway); scaled, never resizing the owner's desktop."""
        return self._api_fragment(view_password, "resize=scale&view_only=1")

    def _api_fragment(self, password: str, display: str) -> str:
        return (f"autoconnect=1&{display}&reconnect=1&path={quote(f'desktop/{self.job_id}/websockify', safe='')}"
                f"&password={quote(password, safe='')}")

    @property
    def web_path(self) -> str:
        """The desktop through the API (a path on the API's host): only the API need be reachable."""
        return f"/desktop/{self.job_id}/vnc.html#{self.web_fragment}"

    @property
    def vnc_port(self) -> int:
        return int(self.record.vnc_port)

    @property
    def ssh(self) -> tuple[str, str, int]:
        user, host, port = self.record.ssh
        return user, host, int(port)

    def vnc_file(self, host: str, port: int, view_only: bool = False) -> str:
        """A .vnc connection file (RealVNC / TightVNC / UltraVNC [Connection] format) with the obfuscated password."""
        password = self.secret.view_password if view_only and self.secret.view_password else self.secret.password
        return ("[Connection]\n"
                f"Host={host}:{port}\n"
                f"Password={passwd_file(password).hex()}\n"
                "[Options]\n"
                f"ViewOnly={1 if view_only else 0}\n"
                "Shared=1\n")

    def tunnel_instructions(self, local_port: int) -> str:
        user, host, ssh_port = self.ssh
        port_opt = f" -p {ssh_port}" if ssh_port != 22 else ""
        return (f"OpenSSH:  ssh -N -L {local_port}:127.0.0.1:{self.vnc_port} {user}@{host}{port_opt}\n"
                f"PuTTY:    Connection > SSH > Tunnels: source port {local_port}, destination "
                f"127.0.0.1:{self.vnc_port}, Add; then open the session to {user}@{host} port {ssh_port}\n"
                f"Then point your VNC viewer at 127.0.0.1:{local_port}"
                + (f" (display :{local_port - 5900})" if 5900 <= local_port < 6000 else ""))


def desktop(client: Any, job: str, wait: float = 0) -> Desktop:
    """The job's ready desktop (waiting up to `wait` seconds while it starts); a clear error otherwise."""
    job_id = client.resolve(job)
    deadline = time.monotonic() + wait
    while True:
        record = client.store.get_job(job_id)
        if not record.spec.get("desktop", {}).get("enabled", True):
            raise InvalidState(f"job {job_id} has no desktop (desktop.enabled: false)")
        rec = desktop_record(record)
        state = rec.state
        if state is READY:
            secret = DesktopSecrets(client.store).read(job_id)
            if secret is not None:
                return Desktop(job_id, rec, secret)
        if state not in (STARTING, None) or record.state not in (JobState.QUEUED, JobState.PROVISIONING,
                                                                    JobState.UP) or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if state is FAILED:
        raise InvalidState(f"the desktop of job {job_id} failed: {rec.reason}")
    raise InvalidState(f"the desktop of job {job_id} is not ready (desktop {state or 'not started'}, "
                       f"job {record.state.value})")


def check_access(client: Any, d: Desktop, entry: str) -> str:
    """Refuse (and record) a user whose current address is outside the job's CIDR rules; the address."""
    address = client_address(client.store)
    if address is None or not allowed(address, d.record.access or []):
        client.store.append_event(d.job_id, EventKind.ACCESS_REFUSED, {
            "entry": entry, "address": address, "reason": "outside the allowed networks", "user": client.user})
        raise UserError(f"your address {address or '(unknown)'} is outside the desktop's allowed networks "
                        f"({', '.join(d.record.access or [])}); change desktop.access or `e2e access`")
    return address


def open_tunnel(client: Any, d: Desktop, key_filename: str | None = None, known_hosts: Path | None = None,
                endpoint: tuple[str, int] | None = None, sock: Any = None):
    """The SSH connection a tunnel to the desktop runs over (to the head node, or `endpoint`); a host key that
    is unknown or changed is refused, and the refusal recorded on the job."""
    from orchestrator.cluster.base import HostKeyRefused
    from orchestrator.cluster.tunnel import connect as ssh_connect

    user, host, port = d.ssh
    host, port = endpoint or (host, port)
    try:
        return ssh_connect(host, port, user, known_hosts=known_hosts, key_filename=key_filename, sock=sock)
    except HostKeyRefused as exc:
        client.store.append_event(d.job_id, EventKind.ACCESS_REFUSED, {
            "entry": "tunnel", "address": f"{host}:{port}", "user": client.user, "reason": exc.reason,
            "message": exc.message})
        raise


def set_password(client: Any, job: str, password: str, view_password: str | None = None,
                 timeout: float = 30) -> int:
    """Change the desktop's VNC passwords; waits until the head node uses them. The new version number."""
    d = desktop(client, job)
    password = check_password(password)
    view_password = check_password(view_password, "view-only password") if view_password else None
    version = DesktopSecrets(client.store).set_password(d.job_id, password, view_password)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = desktop_record(client.store.get_job(d.job_id))
        if int(rec.password_version or 0) >= version:
            return version
        time.sleep(0.1)
    raise InvalidState(f"the engine has not applied the new password within {timeout:.0f}s; is it running? "
                       "It will be applied on its next pass")
