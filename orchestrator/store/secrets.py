"""Desktop secrets (VNC passwords, gateway token) in their own key per job, read only through an explicit call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.store.keys import KeyNames


@dataclass(frozen=True)
class DesktopSecret:
    password: str
    view_password: str | None
    token: str
    version: int     # bumped by every password change, so the engine knows to rewrite the head node's file


class DesktopSecrets:
    """The store's secrets family (`store.secrets`), kept apart from the job record (which status, events and
    logs show) so no listing ever carries them. The caller generates the values."""

    def __init__(self, client: Any, keys: KeyNames) -> None:
        self._r = client
        self._keys = keys

    def ensure(self, job_id: str, password: str, token: str) -> DesktopSecret:
        """The job's secret, created from `password` and `token` if it has none; never replaced here."""
        key = self._keys.desktop_secret(job_id)
        pipe = self._r.pipeline(transaction=True)  # all at once: a reader never sees half a secret
        pipe.hsetnx(key, "password", password)
        pipe.hsetnx(key, "token", token)
        pipe.hsetnx(key, "version", 1)
        pipe.execute()
        secret = self.read(job_id)
        assert secret is not None  # both fields were just set, if they were not already
        return secret

    def read(self, job_id: str) -> DesktopSecret | None:
        raw = self._r.hgetall(self._keys.desktop_secret(job_id))
        if not raw.get("password") or not raw.get("token"):
            return None
        return DesktopSecret(password=raw["password"], view_password=raw.get("view_password") or None,
                             token=raw["token"], version=int(raw.get("version") or 1))

    def set_password(self, job_id: str, password: str, view_password: str | None) -> int:
        """Replace the passwords (the token stays); the new version number."""
        key = self._keys.desktop_secret(job_id)
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(key, mapping={"password": password, "view_password": view_password or ""})
        pipe.hincrby(key, "version", 1)
        return int(pipe.execute()[-1])

    def delete(self, job_id: str) -> None:
        self._r.delete(self._keys.desktop_secret(job_id))
