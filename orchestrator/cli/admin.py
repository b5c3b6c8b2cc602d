"""`e2e serve` (the REST API and monitor) and `e2e admin` (users and their tokens)."""

from __future__ import annotations

import socket
from typing import Optional

import typer
from rich.table import Table

from orchestrator.cli.common import JSON_OPT, _client, _dump, app, err, out
from orchestrator.model.settings import get_settings

admin_app = typer.Typer(help="Administration: API users and tokens.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")


def _users():
    return _client().store.users


def _say_mode() -> None:
    from orchestrator.control.accounts import mode_notice

    if (notice := mode_notice()) is not None:
        err.print(notice)


@app.command()
def serve(host: Optional[str] = typer.Option(None, help="address to listen on (default E2E_API_HOST)"),
          port: Optional[int] = typer.Option(None, help="port (default E2E_API_PORT)"),
          workers: int = typer.Option(1, help="API processes")) -> None:
    """Serve the REST API, the admin task monitor (/ui) and /metrics over this engine."""
    import uvicorn

    settings = get_settings()
    settings.resolved_redis_url()  # a clear error now rather than on the first request
    _keep_tcp_nodelay(uvicorn)
    _say_mode()
    out.print(f"API on http://{host or settings.api_host}:{port or settings.api_port}/api/v1 "
              f"(schema /openapi.json, monitor /ui, metrics /metrics)")
    uvicorn.run("orchestrator.api.app:create_app", factory=True, host=host or settings.api_host,
                port=port or settings.api_port, workers=workers, log_level="warning", access_log=False)


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
                os_user: Optional[str] = typer.Option(None, "--os-user", help="run their jobs as this existing OS "
                                                      "account (LDAP/SSSD) instead of creating one named NAME"),
                as_json: bool = JSON_OPT) -> None:
    """Create an API user and print their first token (shown once; only its hash is stored). The engine (root)
    creates their OS account, which every process and file of their jobs belongs to, or maps --os-user."""
    from orchestrator.control.accounts import create_user as create

    token = create(_client().store, name, admin, os_user)
    mapped = _users().get(name).os_user
    if as_json:
        _dump({"user": name, "admin": admin, "os_user": mapped, "token": token})
        return
    err.print(f"user {name} created{' (admin)' if admin else ''}, jobs run as OS account {mapped}; "
              "their token (shown once):")
    print(token)


@admin_app.command("map-user")
def map_user(name: str = typer.Argument(..., help="an existing API user"),
             os_user: str = typer.Option(..., "--os-user", help="the existing OS account their jobs run as")) -> None:
    """Change the OS account an API user's jobs run as (jobs already submitted keep theirs)."""
    from orchestrator.control.accounts import map_user as remap

    out.print(f"user {name}: jobs run as OS account {remap(_client().store, name, os_user)}")


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
        from orchestrator.model.errors import UserError
        raise UserError("give either --token TOKEN or --user NAME")
    if token is not None:
        out.print(f"revoked a token of {users.revoke(token)}")
    else:
        out.print(f"revoked {users.revoke_all(user)} token(s) of {user}")


@admin_app.command("users")
def list_users(as_json: bool = JSON_OPT) -> None:
    """The API users, whether admin, the OS account their jobs run as, and how many live tokens each has."""
    rows = _users().list()
    if as_json:
        _dump(rows)
        return
    table = Table("USER", "ADMIN", "OS USER", "TOKENS", box=None)
    for row in rows:
        table.add_row(row["name"], "yes" if row["admin"] else "", row["os_user"] or "-", str(row["tokens"]))
    out.print(table)
