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
    api_token: str | None = None  # the session's job-scoped API token (E2E_TOKEN), minted at submit


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
                             token=raw["token"], version=int(raw.get("version") or 1),
                             api_token=raw.get("api_token") or None)

    def set_api_token(self, job_id: str, token: str) -> None:
        self._r.hset(self._keys.desktop_secret(job_id), "api_token", token)

    def set_password(self, job_id: str, password: str, view_password: str | None) -> int:
        """Replace the passwords (the token stays); the new version number."""
        key = self._keys.desktop_secret(job_id)
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(key, mapping={"password": password, "view_password": view_password or ""})
        pipe.hincrby(key, "version", 1)
        return int(pipe.execute()[-1])

    def delete(self, job_id: str) -> None:
        self._r.delete(self._keys.desktop_secret(job_id))


class DesktopPasses:
    """The store's desktop-passes family (`store.desktop_passes`): one-time link codes and the desktop cookies
    they are exchanged for, each kept only as its sha256 with an expiry, so a Redis dump holds nothing usable."""

    def __init__(self, client: Any, keys: KeyNames) -> None:
        self._r = client
        self._keys = keys

    def put(self, job_id: str, kind: str, digest: str, user: str, ttl: float) -> None:
        self._r.set(self._keys.desktop_pass(job_id, kind, digest), user, px=max(1, int(ttl * 1000)))

    def take(self, job_id: str, kind: str, digest: str) -> str | None:
        """The user of a pass, deleting it in the same step: a second use finds nothing."""
        return self._r.getdel(self._keys.desktop_pass(job_id, kind, digest))

    def peek(self, job_id: str, kind: str, digest: str) -> str | None:
        return self._r.get(self._keys.desktop_pass(job_id, kind, digest))

    def peek_with_ttl(self, job_id: str, kind: str, digest: str) -> tuple[str | None, float | None]:
        """The user of a pass and its seconds left (None, None when there is none)."""
        key = self._keys.desktop_pass(job_id, kind, digest)
        pipe = self._r.pipeline(transaction=True)
        pipe.get(key)
        pipe.pttl(key)
        user, left = pipe.execute()
        return (user, left / 1000) if user is not None and left and left > 0 else (None, None)
