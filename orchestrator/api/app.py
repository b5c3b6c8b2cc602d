"""The API application: one FastAPI app with token auth, per-user rate limits, body limits and JSON errors."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.api import audit
from orchestrator.api.access import ScopedClient
from orchestrator.api.users import User
from orchestrator.model.errors import (
    E2EError,
    InfrastructureError,
    InvalidState,
    NotFound,
    PluginError,
    SpecError,
    UserError,
)
from orchestrator.model.events import EventKind
from orchestrator.model.settings import Settings, get_settings
from orchestrator.store.jobs import JobStore
from orchestrator.worker.celery_app import make_app

log = logging.getLogger("e2e.api")
API = "/api/v1"
TOKEN_COOKIE = "e2e_token"
CSRF_HEADER = "X-Requested-With"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
UPLOAD_PATHS = ("/api/v1/uploads",)


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _status_of(exc: E2EError) -> int:
    for kind, status in ((SpecError, 422), (NotFound, 404), (InvalidState, 409), (UserError, 400),
                         (InfrastructureError, 503), (PluginError, 500)):
        if isinstance(exc, kind):
            return status
    return 500


class BodyLimit:
    """Refuses bodies over the limit (413) before they are read whole: by Content-Length, and by counting
    what arrives for chunked bodies. Input uploads get their own, larger limit."""

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int) -> None:
        self.app, self.limit, self.upload_limit = app, limit, upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.upload_limit if scope["path"].startswith(UPLOAD_PATHS) else self.limit
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = error_response(413, f"request body larger than {limit} bytes")
        if length is not None:
            try:
                if int(length) > limit:
                    return await too_big(scope, receive, send)
            except ValueError:
                return await error_response(400, "bad Content-Length")(scope, receive, send)
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, f"request body larger than {limit} bytes")
            return message

        await self.app(scope, counted, send)


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

    def client(self, user: User) -> ScopedClient:
        return ScopedClient(user, self.settings, self.store, self.celery)


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


async def client_for(request: Request, user: User = Depends(current_user)) -> ScopedClient:
    # async: no I/O here, and a sync dependency would cost every request one more threadpool hop
    client = request.app.state.engine.client(user)
    client.address = request.client.host if request.client else None
    client.on_refused = lambda job_id: _refused_job(client, request, job_id)
    return client


def _refused_job(client: ScopedClient, request: Request, job_id: str) -> None:
    """Another user's job asked for: the caller gets a plain 404; the job's owner and the admins see who."""
    where = _where(request)
    audit.record(client.store, "another user's job", user=client.user, job=job_id, **where)
    client.store.append_event(job_id, EventKind.ACCESS_REFUSED, {
        "entry": "api", "user": client.user, "reason": "not the job's owner", **where})


def admin_client(request: Request, client: ScopedClient = Depends(client_for)) -> ScopedClient:
    if not client.account.admin:
        audit.record(client.store, "admins only", user=client.user, **_where(request))
        raise HTTPException(403, "admins only")
    return client


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(E2EError)
    async def engine_error(request: Request, exc: E2EError) -> JSONResponse:
        if isinstance(exc, SpecError):
            return error_response(422, exc.message, problems=[{"field": f, "message": m} for f, m in exc.problems])
        if isinstance(exc, InfrastructureError):
            log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        return error_response(_status_of(exc), exc.message)

    @app.exception_handler(StarletteHTTPException)  # fastapi's and Starlette's own (404 route, 405, bad body)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error_response(exc.status_code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
                     "message": err.get("msg", "invalid")} for err in exc.errors()]
        summary = "; ".join(f"{p['field']}: {p['message']}" if p["field"] else p["message"] for p in problems)
        return error_response(422, f"invalid request: {summary}", problems=problems)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        ref = secrets.token_hex(4)
        log.exception("unexpected error %s on %s %s", ref, request.method, request.url.path)
        return error_response(500, f"internal error (reference {ref}); the operator can find it in the API log")


def create_app(settings: Settings | None = None, store: JobStore | None = None) -> FastAPI:
    """The API, the monitor pages and /metrics, over one engine (Redis, Celery)."""
    from orchestrator.api import admin, cluster, files, jobs, metrics, streams, uploads, usage

    settings = settings or get_settings()
    app = FastAPI(title="End-to-End Desktops API", version="1",
                  description="Submit, follow, steer and terminate simulation jobs; desktops, files, nodes.")
    app.state.engine = Engine(settings, store)
    _install_errors(app)
    for module in (jobs, uploads, streams, files, cluster, usage, admin, metrics):
        app.include_router(module.router)
    try:
        from orchestrator.api.monitor import routes as monitor_routes  # the admin task monitor's pages, when installed
    except ImportError:
        monitor_routes = None
    if monitor_routes is not None:
        monitor_routes.install(app)
    app.add_middleware(BodyLimit, limit=settings.api_max_body, upload_limit=settings.api_max_upload)
    return app
