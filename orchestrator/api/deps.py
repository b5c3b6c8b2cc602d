"""What every route shares: the engine state (settings, store, users, Celery, rate limiter), token auth and the
per-request control service. Routers and the app import this module; it imports no router (no import circle)."""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import Depends, HTTPException, Request

from orchestrator.api import audit
from orchestrator.api.users import User
from orchestrator.control.service import ControlService
from orchestrator.model.events import EventKind
from orchestrator.model.settings import Settings
from orchestrator.store.jobs import JobStore
from orchestrator.worker.celery_app import make_app

API = "/api/v1"
TOKEN_COOKIE = "e2e_token"
CSRF_HEADER = "X-Requested-With"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class RateLimiter:
    """A token bucket per user, in this process: `rate` requests per second, bursts up to `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when the request may go ahead, else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                return (1 - tokens) / self.rate
            self._buckets[key] = (tokens - 1, now)
            return 0.0


class Engine:
    """What every request shares: settings, the store, the user table, the Celery app, the rate limiter."""

    def __init__(self, settings: Settings, store: JobStore | None = None) -> None:
        self.settings = settings
        self.store = store or JobStore.from_url(settings.resolved_redis_url(), events_maxlen=settings.events_maxlen)
        self.users = self.store.users
        self.celery = make_app(settings)
        self.limiter = RateLimiter(settings.api_rate, settings.api_burst)

    def client(self, user: User) -> ControlService:
        """The control service scoped to one API account (others' jobs answer 404; admins see every job)."""
        return ControlService(self.settings, self.store, user.name, admin=user.admin, celery=self.celery)


def _header_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def bearer(request: Request) -> str | None:
    return _header_token(request) or request.cookies.get(TOKEN_COOKIE)


def cookie_csrf_check(request: Request) -> None:
    """A request authenticated by the monitor's cookie that changes something must carry X-Requested-With:
    a cross-site form cannot set it (the SameSite=Strict cookie is the first guard, this the second)."""
    if (request.method not in SAFE_METHODS and not _header_token(request)
            and request.cookies.get(TOKEN_COOKIE) and not request.headers.get(CSRF_HEADER)):
        raise HTTPException(403, f"cookie-authenticated {request.method} requests need the {CSRF_HEADER} header")


def _where(request: Request) -> dict[str, Any]:
    return {"address": request.client.host if request.client else None, "method": request.method,
            "path": request.url.path}


async def current_user(request: Request) -> User:
    # async, though it reads Redis (one round trip, well under a millisecond): a sync dependency would cost
    # every request a threadpool hop, which is most of the API's own overhead per submission
    engine: Engine = request.app.state.engine
    cookie_csrf_check(request)
    token = bearer(request)
    user = engine.users.authenticate(token)
    if user is None:
        audit.record(engine.store, "no token" if not token else "unknown or revoked token", **_where(request))
        raise HTTPException(401, "missing, unknown or revoked token: send `Authorization: Bearer <token>` "
                                 "(`e2e admin create-user` makes one)", headers={"WWW-Authenticate": "Bearer"})
    wait = engine.limiter.take(user.name)
    if wait:
        raise HTTPException(429, f"too many requests: at most {engine.settings.api_rate:g}/s; retry in {wait:.1f}s",
                            headers={"Retry-After": str(max(1, round(wait)))})
    return user


async def client_for(request: Request, user: User = Depends(current_user)) -> ControlService:
    # async: no I/O here, and a sync dependency would cost every request one more threadpool hop
    client = request.app.state.engine.client(user)
    client.address = request.client.host if request.client else None
    client.on_refused = lambda job_id: _refused_job(client, request, job_id)
    return client


def _refused_job(client: ControlService, request: Request, job_id: str) -> None:
    """Another user's job asked for: the caller gets a plain 404; the job's owner and the admins see who."""
    where = _where(request)
    audit.record(client.store, "another user's job", user=client.user, job=job_id, **where)
    client.store.append_event(job_id, EventKind.ACCESS_REFUSED, {
        "entry": "api", "user": client.user, "reason": "not the job's owner", **where})


def admin_client(request: Request, client: ControlService = Depends(client_for)) -> ControlService:
    if not client.admin:
        audit.record(client.store, "admins only", user=client.user, **_where(request))
        raise HTTPException(403, "admins only")
    return client
