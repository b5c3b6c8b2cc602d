"""Who may see what: a Client scoped to one API user (others' jobs answer 404; admins see every job)."""

from __future__ import annotations

from typing import Any, Callable

from orchestrator.api.users import User
from orchestrator.control.client import Client
from orchestrator.model.errors import NotFound


class ScopedClient(Client):
    """The engine's Python API for one authenticated user; every job lookup goes through resolve()."""

    def __init__(self, user: User, settings: Any, store: Any, celery: Any) -> None:
        super().__init__(settings, store, user.name)
        self.account = user
        self._celery = celery
        self.on_refused: Callable[[str], None] = lambda job_id: None  # the API records who asked

    def visible(self, record: dict[str, Any]) -> bool:
        return self.account.admin or record.get("owner") == self.account.name

    def resolve(self, job: str) -> str:
        """The full id of the caller's one job starting with `job`; 404 for others' jobs, exactly as for
        jobs that do not exist, so ids cannot be probed."""
        if not job or len(job) > 64:
            raise NotFound(f"no job {job!r}")
        [exact] = self.store.owners([job])
        if exact is not None:
            if self.account.admin or exact == self.account.name:
                return job
            self.on_refused(job)
            raise NotFound(f"no job {job!r}")
        candidates = self.store.ids_starting(job)
        if not self.account.admin and candidates:
            candidates = [j for j, owner in zip(candidates, self.store.owners(candidates))
                          if owner == self.account.name]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise NotFound(f"no job {job!r}")
        raise NotFound(f"{job!r} matches {len(candidates)} of your jobs: {', '.join(candidates[:5])}; "
                       "give more of the id")

    def jobs(self, limit: int = 100, owner: str | None = None) -> list[dict[str, Any]]:
        """The newest jobs the caller may see (an admin may ask for one owner's)."""
        if not self.account.admin:
            owner = self.account.name
        return self.store.list_jobs(limit, owner=owner)
