"""What every route shares: the engine state (settings, store, users, Celery, rate limiter), token auth and the
per-request control service. Routers and the app import this module; it imports no router (no import circle)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from starlette.requests import HTTPConnection

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
TOKEN_RECHECK = 2.0  # seconds between re-checks of a long-lived request's token: a revoked one ends it within ~2 s


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


class Slots:
    """At most `cap` concurrent holders per user in this process (live streams, desktop waits): what they hold
    (a connection, a Redis reader, a wait loop) is this process's, so the cap is too."""

    def __init__(self, cap: int, what: str, setting: str) -> None:
        self.cap, self.what, self.setting = cap, what, setting
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, user: str) -> Any:
        """A release function, or 429 when the user already holds `cap`."""
        with self._lock:
            if self._held[user] >= self.cap:
                raise HTTPException(429, f"too many {self.what}: at most {self.cap} open at once per user "
                                         f"({self.setting}); close one and retry", headers={"Retry-After": "5"})
            self._held[user] += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self._held[user] -= 1
                    if self._held[user] <= 0:
                        del self._held[user]
        return release

    @contextmanager
    def held(self, user: str) -> Iterator[None]:
        release = self.take(user)
        try:
            yield
        finally:
            release()

    def count(self, user: str) -> int:
        with self._lock:
            return self._held[user]


class TokenWatch:
    """The token a long-lived request (event or log stream, desktop wait) came with, re-checked at most every
    TOKEN_RECHECK seconds (one Redis read): a revoked token ends what it opened, not only its next request."""

    def __init__(self, request: Request, every: float = TOKEN_RECHECK) -> None:
        self.users = request.app.state.engine.users
        self.token = bearer(request)
        self.every, self.checked, self.valid = every, time.monotonic(), True

    def still_valid(self) -> bool:
        if self.valid and time.monotonic() - self.checked >= self.every:
            self.checked = time.monotonic()
            self.valid = self.users.authenticate(self.token) is not None
        return self.valid


class Engine:
    """What every request shares: settings, the store, the user table, the Celery app, the rate limiter."""

    def __init__(self, settings: Settings, store: JobStore | None = None) -> None:
        self.settings = settings
        self.store = store or JobStore.from_url(settings.resolved_redis_url(), events_maxlen=settings.events_maxlen)
        self.users = self.store.users
        self.celery = make_app(settings)
        self.limiter = RateLimiter(settings.api_rate, settings.api_burst)
        self.streams = Slots(settings.api_max_streams, "live streams", "E2E_API_MAX_STREAMS")
        self.desktop_waits = Slots(settings.api_max_desktop_waits, "waiting desktop requests",
                                   "E2E_API_MAX_DESKTOP_WAITS")

    def client(self, user: User) -> ControlService:
        """The control service scoped to one API account (others' jobs answer 404; admins see every job)."""
        client = ControlService(self.settings, self.store, user.name, admin=user.admin, celery=self.celery)
        client.job_scope = user.job
        return client


def _header_token(request: HTTPConnection) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def bearer(request: HTTPConnection) -> str | None:
    return _header_token(request) or request.cookies.get(TOKEN_COOKIE)


def cross_site(request: HTTPConnection) -> str | None:
    """Why a browser request comes from another site, or None. Browsers send Sec-Fetch-Site (and Origin on
    every POST); a request with neither is no browser's, so no forgery vehicle (the rule Go's
    net/http CrossOriginProtection uses). Without Sec-Fetch-Site (older browsers), Origin must name this host."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:  # the browser's own verdict, whatever a proxy did to Host
        return None if site in ("same-origin", "none") else f"Sec-Fetch-Site is {site!r}"
    origin = request.headers.get("origin")
    if origin is None:
        return None
    host = (request.headers.get("host") or "").lower()
    if origin == "null" or urlsplit(origin).netloc.lower() != host:
        return f"Origin {origin!r} is not this site ({host or 'no Host header'})"
    return None


def cookie_csrf_check(request: Request) -> None:
    """A request authenticated by the monitor's cookie that changes something must come from our own pages:
    same site (Origin/Sec-Fetch-Site), and with X-Requested-With, which a cross-site form cannot set (the
    SameSite=Strict cookie is the first guard, these the second and third)."""
    if request.method in SAFE_METHODS or _header_token(request) or not request.cookies.get(TOKEN_COOKIE):
        return
    if not request.headers.get(CSRF_HEADER):
        raise HTTPException(403, f"cookie-authenticated {request.method} requests need the {CSRF_HEADER} header")
    reason = cross_site(request)
    if reason:
        raise HTTPException(403, f"cross-site request refused: {reason}")


def _where(request: HTTPConnection) -> dict[str, Any]:
    return {"address": request.client.host if request.client else None,
            "method": request.scope.get("method", "WEBSOCKET"),
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
    if user.job:
        job_scope_check(engine, request, user)
    wait = engine.limiter.take(user.name)
    if wait:
        raise HTTPException(429, f"too many requests: at most {engine.settings.api_rate:g}/s; retry in {wait:.1f}s",
                            headers={"Retry-After": str(max(1, round(wait)))})
    return user


def job_scope_check(engine: Engine, request: Request, user: User) -> None:
    """A job-scoped token: refused once its job is terminated (checked on use, then revoked), and allowed only
    on its job's routes (other jobs then answer 404, as another user's do), the listing and /me: 403 elsewhere."""
    job_token_alive(engine, request, user)
    path = request.url.path
    if path in (f"{API}/me", f"{API}/jobs") and request.method in SAFE_METHODS or path.startswith(f"{API}/jobs/"):
        return
    audit.record(engine.store, "job-scoped token outside its job", user=user.name, job=user.job, **_where(request))
    raise HTTPException(403, f"this token acts on job {user.job} only")


def job_token_alive(engine: Engine, request: HTTPConnection, user: User) -> None:
    """401 (and the job's tokens revoked) once a job-scoped token's job is terminated or gone."""
    from orchestrator.model.errors import NotFound
    from orchestrator.model.states import JobState

    try:
        ended = engine.store.get_job(user.job).state is JobState.TERMINATED
    except NotFound:
        ended = True
    if ended:
        engine.users.revoke_job(user.job)
        audit.record(engine.store, "job-scoped token of an ended job", user=user.name, job=user.job,
                     **_where(request))
        raise HTTPException(401, f"this token was for job {user.job}, which has ended",
                            headers={"WWW-Authenticate": "Bearer"})


async def client_for(request: Request, user: User = Depends(current_user)) -> ControlService:
    # async: no I/O here, and a sync dependency would cost every request one more threadpool hop
    client = request.app.state.engine.client(user)
    client.address = request.client.host if request.client else None
    client.on_refused = lambda job_id: _refused_job(client, request, job_id)
    return client


def _refused_job(client: ControlService, request: HTTPConnection, job_id: str) -> None:
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
