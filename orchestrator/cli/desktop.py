"""`e2e desktop` (URL, browser, native-viewer file, SSH tunnel, password), `e2e keys` and `e2e access`."""

from __future__ import annotations

import getpass
import html
import os
import socket
import sys
import tempfile
import time
import webbrowser
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from orchestrator.cli.common import JSON_OPT, _client, _dump, app, err, out
from orchestrator.control.service import ControlService
from orchestrator.model.errors import E2EError, UserError

keys_app = typer.Typer(help="Your SSH public keys: installed on the head node of every cluster you start.",
                       no_args_is_help=True)
access_app = typer.Typer(help="Your default desktop access rule (CIDRs), for jobs whose spec sets none.",
                         no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(access_app, name="access")


@app.command("desktop")
def desktop_cmd(job: str = typer.Argument(..., envvar="E2E_JOB", help="job id (default: $E2E_JOB)"),
                open_browser: bool = typer.Option(False, "--open", help="open the desktop in your web browser"),
                vnc_file: Optional[Path] = typer.Option(None, "--vnc-file", help="write a .vnc file for a viewer"),
                view_only: bool = typer.Option(False, "--view-only", help="with --vnc-file: view-only password"),
                tunnel: bool = typer.Option(False, "--tunnel", help="print the SSH tunnel to the head node's display"),
                run: bool = typer.Option(False, "--run", help="with --tunnel: open the tunnel (until Ctrl-C)"),
                local_port: Optional[int] = typer.Option(None, "--local-port", help="tunnel's local port (5901|5900)"),
                identity: Optional[Path] = typer.Option(None, "-i", "--identity", help="with --run: SSH private key"),
                set_password: bool = typer.Option(False, "--set-password", help="change the VNC password"),
                wait: float = typer.Option(30, help="seconds to wait for a starting desktop"),
                as_json: bool = JSON_OPT) -> None:
    """Connect to a job's desktop: prints its URL (with a one-session token and the VNC password)."""
    client = _client()
    if not isinstance(client, ControlService):  # through the API (--server): the URL, tunnel and password it gives
        return _remote_desktop(client, job, wait, tunnel, open_browser, as_json,
                               unsupported=set_password or run or vnc_file is not None)
    if set_password:
        password, view = _ask_passwords()
        version = client.set_desktop_password(job, password, view)
        out.print(f"VNC password changed (version {version})" + ("; view-only password set" if view else ""))
        return
    d = client.desktop_session(job, wait=wait)
    client.check_desktop_access(d, "tunnel" if tunnel else "desktop url")
    if vnc_file is not None:
        host, port = _viewer_endpoint(client, d, local_port)
        vnc_file.touch(mode=0o600)
        vnc_file.write_text(d.vnc_file(host, port, view_only))
        out.print(f"wrote {vnc_file} for {host}:{port}" + ("" if host == "127.0.0.1" and port == d.vnc_port
                                                           else " (open the tunnel first: --tunnel --run)"))
    if tunnel:
        port = local_port or _free_local_port()
        out.print(d.tunnel_instructions(port), highlight=False)
        if run:
            _run_tunnel(client, d, port, identity)
        return
    link = client.desktop_link(job)
    api_url = client.settings.resolved_api_url() + link["path"]
    if as_json:
        _dump({"id": d.job_id, "url": d.url, "api_url": api_url, "vnc_port": d.vnc_port, "state": d.record.state})
    elif vnc_file is None:
        _print_api_link(api_url, link["expires_in"])
        print(d.url)
    if open_browser:
        open_privately(d.url)


@app.command("share")
def share_cmd(job: str = typer.Argument(..., envvar="E2E_JOB", help="job id (default: $E2E_JOB)"),
              expires: int = typer.Option(3600, "--expires", help="seconds the link works (60 to 604800)"),
              as_json: bool = JSON_OPT) -> None:
    """A view-only link to a job's desktop for someone else: they watch it in their browser, through the API,
    and cannot type or click; it works until it expires (the job's access rules still apply)."""
    client = _client()
    link = client.desktop_share(job, expires)
    url = link.get("url") or client.settings.resolved_api_url() + link["path"]
    if as_json:
        _dump({**link, "url": url})
        return
    err.print(f"view-only, works for {expires} s; anyone holding it may watch (change the view-only password "
              "with `e2e desktop --set-password` to end every share at once):")
    print(url)


def _remote_desktop(client, job: str, wait: float, tunnel: bool, open_browser: bool, as_json: bool,
                    unsupported: bool) -> None:
    if unsupported:
        raise UserError("--set-password, --vnc-file and --run work on the engine's machine only, not through "
                        "--server")
    info = client.desktop(job, wait)
    link = None
    if not tunnel:
        try:
            link = client.desktop_link(job)
            info["api_url"] = link["url"]
        except E2EError:  # an API from before desktops went through it: the direct URL still works
            pass
    if as_json:
        _dump(info)
    elif tunnel:
        out.print(info["tunnel"], highlight=False)
    else:
        if link is not None:
            _print_api_link(link["url"], link["expires_in"])
        print(info["url"])
    if open_browser:
        open_privately(info["url"])


def _print_api_link(url: str, expires_in: float) -> None:
    """The desktop through the API (the browser needs to reach only the API), on stderr: stdout keeps the
    direct gateway URL alone, which scripts and native clients read."""
    err.print(f"through the API (one-time link, valid {expires_in:.0f} s): {url}", highlight=False, soft_wrap=True)
    err.print("direct to the head node's gateway:", highlight=False)


BROWSER_READ_WAIT = 15.0  # seconds to wait for the browser to read the page before leaving it in place


def open_privately(url: str, wait: float = BROWSER_READ_WAIT) -> None:
    """Open a URL holding secrets (session token, VNC password) without putting it on the browser's command
    line, where every local user can read it in /proc/*/cmdline: a 0600 page in a 0700 folder redirects to it,
    and only the page's path goes on argv. The page is removed once the browser has read it."""
    folder = Path(tempfile.mkdtemp(prefix="e2e-desktop-", dir=os.environ.get("XDG_RUNTIME_DIR") or None))
    page = folder / "open.html"
    target = html.escape(url, quote=True)
    fd = os.open(page, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f'<!doctype html><meta charset="utf-8"><meta name="referrer" content="no-referrer">'
                 f'<meta http-equiv="refresh" content="0;url={target}"><title>E2E desktop</title>'
                 f'<p><a href="{target}">Open the desktop</a></p>\n')
    written = page.stat().st_mtime
    unread = written - 60
    os.utime(page, (unread, written))  # an access time before the write: the browser's read moves it (relatime)
    webbrowser.open(page.as_uri())
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if page.stat().st_atime > unread + 1:
                break
        except FileNotFoundError:
            return
        time.sleep(0.1)
    else:
        err.print(f"the browser has not opened {page} yet; it holds the desktop's password: delete it after use",
                  highlight=False)
        return
    time.sleep(0.5)  # the browser has the page; give its redirect a moment before the file goes
    page.unlink(missing_ok=True)
    folder.rmdir()


def _viewer_endpoint(client: ControlService, d, local_port: Optional[int]) -> tuple[str, int]:
    """Where a native viewer connects: the head node's port when it is this machine, else the tunnel's end."""
    if local_port is None and client.head_is_local(d):
        return "127.0.0.1", d.vnc_port
    return "127.0.0.1", local_port or 5901


def _free_local_port() -> int:
    from orchestrator.desktop.connect import LOCAL_TUNNEL_PORTS

    for port in LOCAL_TUNNEL_PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise UserError("local ports 5901 and 5900 are both taken; choose one with --local-port")


def _run_tunnel(client: ControlService, d, port: int, identity: Optional[Path]) -> None:
    _, host, _ = d.ssh
    # the host keys the engine already trusts for its nodes count too (besides ~/.ssh/known_hosts)
    forwarder = client.open_desktop_tunnel(d, port, str(identity) if identity else None)
    out.print(f"tunnel open: 127.0.0.1:{forwarder.local_port} -> {host}:{d.vnc_port}; Ctrl-C closes it")
    try:
        forwarder.wait()
    except KeyboardInterrupt:
        pass
    finally:
        forwarder.close()


def _ask_passwords() -> tuple[str, Optional[str]]:
    """vncpasswd's dialogue: Password, Verify, then an optional view-only pair; lines from stdin when piped."""
    from orchestrator.desktop.vncauth import MIN_LENGTH, SIGNIFICANT

    piped = not sys.stdin.isatty()
    lines = iter(sys.stdin.read().splitlines()) if piped else None

    def ask(prompt: str) -> str:
        return next(lines, "") if lines is not None else getpass.getpass(prompt)

    def pair(what: str) -> str:
        for _ in range(3):
            first = ask("Password:")
            if not first:
                raise UserError(f"{what} not changed (empty)")
            if len(first) < MIN_LENGTH:
                err.print("Password too short")
                if piped:
                    raise UserError(f"{what} too short: at least {MIN_LENGTH} characters")
                continue
            if ask("Verify:") != first:
                err.print("Passwords don't match - try again")
                if piped:
                    raise UserError(f"{what}s do not match")
                continue
            if len(first) > SIGNIFICANT:
                err.print(f"Password too long - only the first {SIGNIFICANT} characters are used")
            return first
        raise UserError(f"{what} not changed")

    password = pair("password")
    if piped:
        answer = next(lines, "n")
    else:
        answer = input("Would you like to enter a view-only password (y/n)? ")
    view = pair("view-only password") if answer.strip().lower().startswith("y") else None
    return password, view


@keys_app.command("add")
def keys_add(file: Path = typer.Argument(..., help="public key file (e.g. ~/.ssh/id_ed25519.pub); - for stdin"),
             ) -> None:
    """Register a public key (ssh-ed25519, ecdsa, or RSA of 2048+ bits)."""
    text = sys.stdin.read() if str(file) == "-" else _read_key_file(file)
    key = _client().add_key(text)
    out.print(f"added {key['type']} {key['bits']} bits {key['fingerprint']} {key['comment']}".rstrip(),
              highlight=False)


def _read_key_file(file: Path) -> str:
    try:
        return file.expanduser().read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {str(file)!r}: {getattr(exc, 'strerror', None) or exc}") from None


@keys_app.command("ls")
def keys_ls(as_json: bool = JSON_OPT) -> None:
    """List your registered keys."""
    rows = _client().keys()
    if as_json:
        _dump([{k: v for k, v in r.items() if k != "blob"} for r in rows])
        return
    table = Table(box=None)
    table.add_column("FINGERPRINT", no_wrap=True, min_width=50)  # whole: `e2e keys rm` takes it
    for name in ("TYPE", "BITS", "COMMENT"):
        table.add_column(name)
    for r in rows:
        table.add_row(r["fingerprint"], r["type"], str(r["bits"]), r["comment"])
    out.print(table)


@keys_app.command("rm")
def keys_rm(which: str = typer.Argument(..., help="fingerprint (SHA256:...) or comment")) -> None:
    """Remove a registered key; running clusters drop it within moments."""
    for fp in _client().remove_key(which):
        out.print(f"removed {fp}", highlight=False)


@access_app.command("show")
def access_show(as_json: bool = JSON_OPT) -> None:
    """Your default rule and the address the engine sees you at now ('my-ip')."""
    access = _client().access_rules()
    if as_json:
        _dump({"rules": access["shown"], "default": access["default"], "my_ip": access["my_ip"]})
        return
    out.print(f"default access: {', '.join(access['shown'])}" + (" (built-in)" if access["default"] else ""))
    out.print(f"your address as the engine sees it: {access['my_ip'] or 'unknown'}")


@access_app.command("set")
def access_set(rules: list[str] = typer.Argument(..., help="everywhere | my-ip | CIDR ... (IPv4 or IPv6)")) -> None:
    """Set your default rule; my-ip is fixed to your current address now."""
    concrete = _client().set_access_rules(rules)
    out.print(f"default access: {', '.join(concrete)}")


@access_app.command("clear")
def access_clear() -> None:
    """Go back to the built-in default (everywhere; the session token and VNC password still apply)."""
    _client().set_access_rules(None)
    out.print("default access: everywhere (built-in)")
