"""`e2e serve` (the REST API and monitor) and `e2e admin` (users and their tokens)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from orchestrator.cli.common import JSON_OPT, _client, _dump, app, err, out
from orchestrator.model.errors import UserError
from orchestrator.model.settings import Settings, get_settings
from orchestrator.store import acl
from orchestrator.worker.stack import acl_grants, restrict_umask

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

    restrict_umask()  # the API's own files (uploads, results it writes) are for the engine's account only
    settings = get_settings()
    settings.resolved_redis_url()  # a clear error now rather than on the first request
    _keep_tcp_nodelay(uvicorn)
    proxies = settings.trusted_proxies
    _say_mode()
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


@admin_app.command("redis-acl")
def redis_acl(host: str = typer.Option("redis", help="the Redis host the role URLs name"),
              port: int = typer.Option(6379, help="the Redis port the role URLs name"),
              db: int = typer.Option(0, help="the Redis database the role URLs name"),
              env_dir: Optional[Path] = typer.Option(
                  None, "--env-dir", help="write ROLE.env (0600) for each role here: E2E_REDIS_URL (and "
                                          "REDISCLI_AUTH), for docker compose's env_file"),
              urls_file: Optional[Path] = typer.Option(
                  None, "--urls-file", help="write every role's URL as JSON (0600), for E2E_REDIS_URLS_FILE")) -> None:
    """Print a Redis ACL file with one user per engine role (api, worker, beat, health) and a password-only
    admin (`default`), with fresh passwords stored only as SHA-256 hashes; the clear role URLs go to 0600
    files (--env-dir and/or --urls-file), never to the terminal. E.g.
    `e2e admin redis-acl --env-dir deploy/redis > deploy/redis/users.acl`."""
    if env_dir is None and urls_file is None:
        raise UserError("give --env-dir DIR and/or --urls-file FILE: the role passwords are written only there")
    if not 0 < port < 65536:
        raise UserError(f"--port: {port} is not a TCP port")
    if db < 0:
        raise UserError(f"--db: {db} is not a Redis database number")
    passwords = acl.new_passwords()
    urls = acl.role_urls(passwords, host, port, db)
    if env_dir is not None:
        env_dir.mkdir(parents=True, exist_ok=True)
        for (role, url), password in zip(urls.items(), passwords.values(), strict=True):
            _write_private(env_dir / f"{role}.env", f"E2E_REDIS_URL={url}\nREDISCLI_AUTH={password}\n")
    if urls_file is not None:
        _write_private(urls_file, json.dumps({"redis_urls": urls}, indent=2) + "\n")
    print(acl.acl_file(acl_grants(), passwords), end="")


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (created 0600, and made so if it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
