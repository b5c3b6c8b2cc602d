"""The API application: one FastAPI app with token auth, per-user rate limits, body limits and JSON errors.
The routes' shared dependencies (auth, the per-request control service) are in orchestrator.api.deps."""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.api import admin, cluster, desktop_web, files, jobs, metrics, notify, streams, uploads, usage
from orchestrator.api.deps import API, TOKEN_COOKIE, Engine  # noqa: F401  (API, TOKEN_COOKIE: their old home)
from orchestrator.control.service import DesktopRefused
from orchestrator.model.errors import (
    E2EError,
    InfrastructureError,
    InvalidState,
    NotFound,
    PluginError,
    SpecError,
    UserError,
)
from orchestrator.model.settings import Settings, get_settings
from orchestrator.store.jobs import JobStore

log = logging.getLogger("e2e.api")
UPLOAD_PATHS = ("/api/v1/uploads",)
PUT_FILE = re.compile(r"^/api/v1/jobs/[^/]+/files/")  # a file put into a running job's work folder


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _status_of(exc: E2EError) -> int:
    for kind, status in ((SpecError, 422), (NotFound, 404), (InvalidState, 409), (DesktopRefused, 403),
                         (UserError, 400), (InfrastructureError, 503), (PluginError, 500)):
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
        path = scope["path"]
        uploading = path.startswith(UPLOAD_PATHS) or (scope.get("method") == "PUT" and PUT_FILE.match(path))
        limit = self.upload_limit if uploading else self.limit
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
    settings = settings or get_settings()
    app = FastAPI(title="End-to-End Desktops API", version="1",
                  description="Submit, follow, steer and terminate simulation jobs; desktops, files, nodes.")
    app.state.engine = Engine(settings, store)
    _install_errors(app)
    for module in (jobs, uploads, streams, files, cluster, notify, usage, admin, metrics, desktop_web):
        app.include_router(module.router)
    try:
        from orchestrator.api.monitor import routes as monitor_routes  # the admin task monitor's pages, when installed
    except ImportError:
        monitor_routes = None
    if monitor_routes is not None:
        monitor_routes.install(app)
    app.add_middleware(BodyLimit, limit=settings.api_max_body, upload_limit=settings.api_max_upload)
    return app
