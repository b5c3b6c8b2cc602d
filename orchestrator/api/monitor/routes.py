"""The monitor's pages under /ui: login (token -> HttpOnly SameSite=Strict cookie), jobs, job, submit, nodes,
workers. Pages only render a frame; their JavaScript reads and steers through the API with the cookie."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, quote

import yaml
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.api.deps import TOKEN_COOKIE, client_for, cross_site
from orchestrator.api.users import User
from orchestrator.control.service import ControlService
from orchestrator.model.errors import NotFound, SpecError
from orchestrator.model.untrusted import load_yaml, yaml_error_text

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/ui", include_in_schema=False)
SESSION_SECONDS = 12 * 3600
# Pages load only their own script and style; nothing inline, nothing from elsewhere, never framed.
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                    "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin", "X-Content-Type-Options": "nosniff"}


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="monitor-static")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=303)


def page_user(request: Request) -> Optional[User]:
    return request.app.state.engine.users.authenticate(request.cookies.get(TOKEN_COOKIE))


def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    return templates.TemplateResponse(request, name, context, status_code=status, headers=SECURITY_HEADERS)


def page(request: Request, name: str, admin_only: bool = False, **context: Any) -> Response:
    user = page_user(request)
    if user is None:
        return RedirectResponse(f"/ui/login?next={quote(request.url.path)}", status_code=303)
    if admin_only and not user.admin:
        return render(request, "error.html", 403, user=user, message="This page is for admins.")
    return render(request, name, user=user, **context)


def _safe_next(value: str) -> str:
    """Only our own pages: never an open redirect."""
    return value if value.startswith("/ui/") and not value.startswith("/ui//") and "\\" not in value else "/ui/"


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/ui/") -> Response:
    return render(request, "login.html", user=None, next=_safe_next(next), error=None)


def _forged(request: Request, what: str) -> Optional[Response]:
    """A login or logout posted from another site (login CSRF would log the victim in as the attacker) gets a
    403 page; our own forms are same-origin."""
    reason = cross_site(request)
    if reason is None:
        return None
    return render(request, "error.html", 403, user=None, message=f"Cross-site {what} refused: {reason}.")


@router.post("/login")
async def login(request: Request) -> Response:
    forged = _forged(request, "login")
    if forged is not None:
        return forged
    form = parse_qs((await request.body()).decode(errors="replace"))
    token = (form.get("token") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/ui/"])[0])
    if request.app.state.engine.users.authenticate(token) is None:
        return render(request, "login.html", 401, user=None, next=target,
                      error="Unknown or revoked token. `e2e admin create-user NAME` makes one.")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(TOKEN_COOKIE, token, max_age=SESSION_SECONDS, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    forged = _forged(request, "logout")
    if forged is not None:
        return forged
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(TOKEN_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/", response_class=HTMLResponse)
def jobs_page(request: Request) -> Response:
    return page(request, "jobs.html")


@router.get("/jobs/{job}", response_class=HTMLResponse)
def job_page(request: Request, job: str) -> Response:
    user = page_user(request)
    if user is not None:
        try:
            job = request.app.state.engine.client(user).resolve(job)
        except NotFound:
            return render(request, "error.html", 404, user=user, message=f"No job {job!r}.")
    return page(request, "job.html", job_id=job)


@router.get("/submit", response_class=HTMLResponse)
def submit_page(request: Request) -> Response:
    return page(request, "submit.html")


@router.get("/nodes", response_class=HTMLResponse)
def nodes_page(request: Request) -> Response:
    return page(request, "nodes.html")


@router.get("/workers", response_class=HTMLResponse)
def workers_page(request: Request) -> Response:
    return page(request, "workers.html", admin_only=True)


class SpecText(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=200_000, description="a job spec as YAML or JSON")


@router.post("/submit", status_code=201)
def submit(body: SpecText, client: ControlService = Depends(client_for)) -> dict[str, Any]:
    """The submit form's spec text, parsed here (YAML is a superset of JSON), then submitted as POST /jobs."""
    from orchestrator.api.jobs import SubmitBody
    from orchestrator.api.jobs import submit as submit_job

    try:
        data = load_yaml(body.text)  # no anchors or aliases: a few hundred bytes of them expand to gigabytes
    except yaml.YAMLError as exc:
        raise SpecError([("text", yaml_error_text(exc))]) from None
    if not isinstance(data, dict):
        raise SpecError([("text", "a job spec is a mapping (name:, solver:, ...)")])
    return submit_job(SubmitBody(spec=data), client)
