"""`e2e serve` (the REST API and monitor) and `e2e admin` (users and their tokens)."""

from __future__ import annotations

import socket
from typing import Any, Optional

import typer
from rich.table import Table

from orchestrator.cli.common import JSON_OPT, _client, _dump, app, err, out
from orchestrator.model.errors import UserError
from orchestrator.model.settings import Settings, get_settings

admin_app = typer.Typer(help="Administration: API users and tokens.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")


def _users():
    return _client().store.users


@app.command()
def serve(host: Optional[str] = typer.Option(None, help="address to listen on (default E2E_API_HOST)"),
          port: Optional[int] = typer.Option(None, help="port (default E2E_API_PORT)"),
          workers: int = typer.Option(1, help="API processes")) -> None:
    """Serve the REST API, the admin task monitor (/ui) and /metrics over this engine."""
    import uvicorn

    settings = get_settings()
    settings.resolved_redis_url()  # a clear error now rather than on the first request
    _keep_tcp_nodelay(uvicorn)
    proxies = settings.trusted_proxies
    out.print(f"API on http://{host or settings.api_host}:{port or settings.api_port}/api/v1 "
              f"(schema /openapi.json, monitor /ui, metrics /metrics); forwarded headers believed from "
              f"{', '.join(proxies) if proxies else 'no proxy (E2E_TRUSTED_PROXIES unset)'}", highlight=False)
    uvicorn.run("orchestrator.api.app:create_app", factory=True, host=host or settings.api_host,
                port=port or settings.api_port, workers=workers, log_level="warning", access_log=False,
                **proxy_options(settings))


def proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for forwarded headers: believed only from E2E_TRUSTED_PROXIES. uvicorn's own default
    trusts loopback, so anyone on the host could claim any address (the desktop CIDR rules, my-ip and the audit
    read it); with no proxy configured the headers are not read at all."""
    if not settings.trusted_proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": list(settings.trusted_proxies)}


def _keep_tcp_nodelay(uvicorn) -> None:
    """With --workers, uvicorn binds the listener itself with proto 0, and asyncio enables TCP_NODELAY only on
    sockets that say IPPROTO_TCP: Nagle then meets the client's delayed ACK and every keep-alive request
    waits ~40 ms (uvicorn issue #3149; measured here: 44 ms a request with 2 workers, 1.2 ms with one).
    The listener is rebuilt on the same descriptor with its protocol named; accepted sockets inherit it."""
    original = uvicorn.config.Config.bind_socket

    def bind_socket(config):
        sock = original(config)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
            sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
        return sock

    uvicorn.config.Config.bind_socket = bind_socket


@admin_app.command("create-user")
def create_user(name: str = typer.Argument(..., help="user name (lower-case letters, digits, _ . -)"),
                admin: bool = typer.Option(False, "--admin", help="may see and control every job, drain nodes"),
                as_json: bool = JSON_OPT) -> None:
    """Create an API user and print their first token (shown once; only its hash is stored)."""
    token = _users().create(name, admin)
    if as_json:
        _dump({"user": name, "admin": admin, "token": token})
        return
    err.print(f"user {name} created{' (admin)' if admin else ''}; their token (shown once):")
    print(token)


@admin_app.command("token")
def new_token(name: str = typer.Argument(..., help="user name"),
              label: str = typer.Option("", help="what for")) -> None:
    """Issue another token for a user (e.g. one per machine), printed once."""
    print(_users().issue(name, label))


@admin_app.command("revoke")
def revoke(token: Optional[str] = typer.Option(None, "--token", help="revoke this one token"),
           user: Optional[str] = typer.Option(None, "--user", help="revoke every token of this user")) -> None:
    """Revoke a token, or every token of a user; requests with it are refused from then on."""
    users = _users()
    if (token is None) == (user is None):
        raise UserError("give either --token TOKEN or --user NAME")
    if token is not None:
        out.print(f"revoked a token of {users.revoke(token)}")
    else:
        out.print(f"revoked {users.revoke_all(user)} token(s) of {user}")


@admin_app.command("users")
def list_users(as_json: bool = JSON_OPT) -> None:
    """The API users, whether admin, and how many live tokens each has."""
    rows = _users().list()
    if as_json:
        _dump(rows)
        return
    table = Table("USER", "ADMIN", "TOKENS", box=None)
    for row in rows:
        table.add_row(row["name"], "yes" if row["admin"] else "", str(row["tokens"]))
    out.print(table)
