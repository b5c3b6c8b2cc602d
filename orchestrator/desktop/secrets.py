"""Desktop secrets (VNC passwords, gateway token) in their own Redis key, read only through an explicit call."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from orchestrator.desktop.vncauth import generate_password


@dataclass(frozen=True)
class DesktopSecret:
    password: str
    view_password: str | None
    token: str
    version: int     # bumped by every password change, so the engine knows to rewrite the head node's file


class DesktopSecrets:
    """Kept apart from the job record (which status, events and logs show) so no listing ever carries them."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def _key(self, job_id: str) -> str:
        return f"{self.store.prefix}:job:{{{job_id}}}:desktop-secret"

    def ensure(self, job_id: str) -> DesktopSecret:
        """The job's secret, created (random password and token) the first time; never replaced here."""
        key = self._key(job_id)
        pipe = self.store.r.pipeline(transaction=True)  # all at once: a reader never sees half a secret
        pipe.hsetnx(key, "password", generate_password())
        pipe.hsetnx(key, "token", secrets.token_urlsafe(24))
        pipe.hsetnx(key, "version", 1)
        pipe.execute()
        return self.read(job_id)

    def read(self, job_id: str) -> DesktopSecret | None:
        raw = self.store.r.hgetall(self._key(job_id))
        if not raw.get("password") or not raw.get("token"):
            return None
        return DesktopSecret(password=raw["password"], view_password=raw.get("view_password") or None,
                             token=raw["token"], version=int(raw.get("version") or 1))

    def set_password(self, job_id: str, password: str, view_password: str | None) -> int:
        """Replace the passwords (the token stays); the new version number."""
        key = self._key(job_id)
        pipe = self.store.r.pipeline(transaction=True)
        pipe.hset(key, mapping={"password": password, "view_password": view_password or ""})
        pipe.hincrby(key, "version", 1)
        return int(pipe.execute()[-1])

    def delete(self, job_id: str) -> None:
        self.store.r.delete(self._key(job_id))
