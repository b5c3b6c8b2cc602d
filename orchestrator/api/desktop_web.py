"""The desktop's web client through the API: noVNC's files and its WebSocket proxied to the job's Xvnc, so a
browser needs to reach only the API (the Open OnDemand reverse-proxy model).

Who gets in: the job's owner or an admin (the monitor's session cookie, or a bearer token), a job-scoped token
for its job, or a browser holding the desktop cookie a one-time link (POST /api/v1/jobs/{id}/desktop/link)
was exchanged for. The job's CIDR rules (desktop.access) apply on the real peer address (behind
E2E_TRUSTED_PROXIES, the one uvicorn took from X-Forwarded-For); refusals are access.refused events. Xvnc
still asks for the VNC password, which noVNC takes from the URL's fragment (never sent to a server).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection

from orchestrator.api import audit
from orchestrator.api.deps import TOKEN_COOKIE, _header_token, _refused_job, _where, cross_site, job_token_alive
from orchestrator.api.users import User
from orchestrator.control.desktop import DESKTOP_COOKIE_TTL, desktop_cookie_user, redeem_desktop_link
from orchestrator.control.service import ControlService
from orchestrator.model.errors import E2EError, NotFound
from orchestrator.model.events import EventKind

NOVNC_DIR = Path("/usr/share/novnc")  # Debian's noVNC, the same files the head node's gateway serves
DESKTOP_COOKIE = "e2e_desktop"
CHUNK = 1 << 16
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
                "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}

router = APIRouter(prefix="/desktop/{job}", tags=["desktop"], include_in_schema=False)

# The one-time link's page: it takes the code from the fragment (browsers never send it, so no log sees it),
# drops it from the address bar, posts it, and on success opens noVNC with the rest of the fragment.
LINK_PAGE = ('<!doctype html><meta charset="utf-8"><title>E2E desktop</title>'
             '<p id="msg">Opening the desktop...</p><script src="link.js"></script>\n')
LINK_JS = """(async () => {
  const hash = location.hash.slice(1);
  const code = new URLSearchParams(hash).get("code") || "";
  const rest = hash.replace(/(^|&)code=[^&]*/, "").replace(/^&/, "");
  history.replaceState(null, "", location.pathname);
  const r = await fetch("link", {method: "POST", credentials: "same-origin", body: JSON.stringify({code}),
                                 headers: {"Content-Type": "application/json", "X-Requested-With": "e2e"}});
  if (r.ok) { location.replace("vnc.html#" + rest); return; }
  let why = "this link has been used or has expired";
  try { why = (await r.json()).error || why; } catch (e) {}
  document.getElementById("msg").textContent = why;
})();
"""


class LinkBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(max_length=200)


def _address(conn: HTTPConnection) -> str | None:
    return conn.client.host if conn.client else None


def _caller(conn: HTTPConnection, job: str) -> ControlService:
    """The control service of whoever this request is, bound to this job when a cookie from a link let it in."""
    engine = conn.app.state.engine
    token = _header_token(conn) or conn.cookies.get(TOKEN_COOKIE)
    user = engine.users.authenticate(token) if token else None
    if user is not None and user.job:
        job_token_alive(engine, conn, user)
    if user is None:
        name = desktop_cookie_user(engine.store, job, conn.cookies.get(DESKTOP_COOKIE))
        if name is None:
            audit.record(engine.store, "desktop: no session, token or link cookie", job=job, **_where(conn))
            raise HTTPException(401, "sign in to the monitor (or open a fresh one-time desktop link) first")
        user = User(name=name, admin=False, job=job)  # the link's cookie opens this desktop and nothing else
    client: ControlService = engine.client(user)
    client.address = _address(conn)
    client.on_refused = lambda job_id: _refused_job(client, conn, job_id)  # another's job: 404, and recorded
    return client


def _authorised(conn: HTTPConnection, job: str) -> tuple[ControlService, Any]:
    """The caller and the job's ready desktop, after the CIDR check on the real peer address (403, recorded)."""
    client = _caller(conn, job)
    session = client.desktop_session(job)
    client.check_desktop_access(session, "api desktop", _address(conn))
    return client, session


def _refused(conn: HTTPConnection, job: str, reason: str, entry: str = "api desktop link") -> None:
    """An audit record, and an access.refused event on the job when it exists (its owner sees the attempt)."""
    store = conn.app.state.engine.store
    audit.record(store, reason, job=job, **_where(conn))
    if store.owners([job])[0] is not None:
        store.append_event(job, EventKind.ACCESS_REFUSED, {"entry": entry, "reason": reason, **_where(conn)})


@router.get("/link")
def link_page(job: str) -> HTMLResponse:
    return HTMLResponse(LINK_PAGE, headers=PAGE_HEADERS)


@router.get("/link.js")
def link_script(job: str) -> Response:
    return Response(LINK_JS, media_type="text/javascript", headers=PAGE_HEADERS)


@router.post("/link", status_code=204)
def redeem_link(job: str, body: LinkBody, request: Request) -> Response:
    """Exchange a one-time link's code for this desktop's cookie (HttpOnly, SameSite=Strict, this path only)."""
    reason = cross_site(request)
    if reason:
        _refused(request, job, f"cross-site link redemption: {reason}")
        raise HTTPException(403, f"cross-site request refused: {reason}")
    cookie = redeem_desktop_link(request.app.state.engine.store, job, body.code)
    if cookie is None:
        _refused(request, job, "one-time desktop link unknown, used or expired")
        raise HTTPException(403, "this desktop link has been used or has expired: ask for a new one")
    response = Response(status_code=204)
    response.set_cookie(DESKTOP_COOKIE, cookie, max_age=int(DESKTOP_COOKIE_TTL), path=f"/desktop/{job}/",
                        httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


@router.get("/")
def index(job: str) -> RedirectResponse:
    return RedirectResponse(f"/desktop/{job}/vnc.html", status_code=302)


@router.get("/{path:path}")
def novnc_file(job: str, path: str, request: Request) -> FileResponse:
    """One of noVNC's files, for a caller who may open this desktop."""
    _authorised(request, job)
    root = NOVNC_DIR.resolve()
    target = (root / path).resolve()
    if root not in target.parents or not target.is_file():
        raise NotFound(f"no desktop file {path!r}")
    return FileResponse(target, headers={"Cache-Control": "private, max-age=3600"})


@router.websocket("/websockify")
async def websockify(websocket: WebSocket, job: str) -> None:
    """noVNC's RFB stream, carried both ways between the browser's WebSocket and Xvnc."""
    reason = cross_site(websocket)  # a page on another site cannot ride the user's cookie into the desktop
    try:
        if reason:
            await asyncio.to_thread(_refused, websocket, job, f"cross-site WebSocket: {reason}", "api desktop proxy")
            raise HTTPException(403, f"cross-site WebSocket refused: {reason}")
        client = await asyncio.to_thread(_caller, websocket, job)
        stream = await asyncio.to_thread(client.open_desktop_stream, job, _address(websocket))
    except (HTTPException, E2EError, OSError):
        await websocket.close(code=1008)  # before accept: the browser's handshake gets a 403
        return
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol="binary" if "binary" in offered else None)
    try:
        await _relay(websocket, stream)
    finally:
        stream.close()


async def _relay(websocket: WebSocket, stream: Any) -> None:
    loop = asyncio.get_running_loop()
    from_vnc: asyncio.Queue[bytes] = asyncio.Queue()

    def read_vnc() -> None:  # a thread: the stream (a socket, or an ssh channel) blocks
        data = b""
        try:
            while data := stream.recv(CHUNK):
                loop.call_soon_threadsafe(from_vnc.put_nowait, data)
        except (OSError, RuntimeError):
            pass
        finally:
            with contextlib.suppress(RuntimeError):  # the loop may be gone already (server shutting down)
                loop.call_soon_threadsafe(from_vnc.put_nowait, b"")

    async def to_browser() -> None:
        while data := await from_vnc.get():
            await websocket.send_bytes(data)

    async def to_vnc() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            await asyncio.to_thread(stream.sendall, data)

    threading.Thread(target=read_vnc, name=f"desktop-relay-{id(stream):x}", daemon=True).start()
    browser, vnc = asyncio.create_task(to_browser()), asyncio.create_task(to_vnc())
    try:
        done, _ = await asyncio.wait((browser, vnc), return_when=asyncio.FIRST_COMPLETED)
    finally:  # nothing awaited here: the server may be cancelling this very task
        browser.cancel()
        vnc.cancel()
    if vnc not in done:  # Xvnc ended the session (or its stream failed) first: close the browser's side
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close()
