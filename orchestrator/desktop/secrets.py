"""Desktop secrets (VNC passwords, gateway token): generated here, kept by the store's secrets family in their
own key, read only through an explicit call."""

from __future__ import annotations

import secrets
from typing import Any

from orchestrator.desktop.vncauth import generate_password
from orchestrator.store.secrets import DesktopSecret

__all__ = ["DesktopSecret", "DesktopSecrets"]


class DesktopSecrets:
    """Kept apart from the job record (which status, events and logs show) so no listing ever carries them."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def ensure(self, job_id: str) -> DesktopSecret:
        """The job's secret, created (random password and token) the first time; never replaced here."""
        return self.store.secrets.ensure(job_id, password=generate_password(), token=secrets.token_urlsafe(24))

    def read(self, job_id: str) -> DesktopSecret | None:
        return self.store.secrets.read(job_id)

    def set_password(self, job_id: str, password: str, view_password: str | None) -> int:
        """Replace the passwords (the token stays); the new version number."""
        return self.store.secrets.set_password(job_id, password, view_password)

    def delete(self, job_id: str) -> None:
        self.store.secrets.delete(job_id)
