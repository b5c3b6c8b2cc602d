"""`e2e notify`: the caller's notification targets (webhooks, email), signing secret, a test send, the log."""

from __future__ import annotations

import time
from typing import Optional

import typer
from rich.table import Table

from orchestrator.cli.common import JSON_OPT, _client, _dump, app, out
from orchestrator.model.notify import EVENTS

notify_app = typer.Typer(help="Notifications: webhooks and email for your jobs' events; the delivery log.",
                         no_args_is_help=True)
app.add_typer(notify_app, name="notify")

EVENTS_OPT = typer.Option(None, "--events", help=f"comma-separated events (default all): {', '.join(EVENTS)}")


def _events(value: Optional[str]) -> list[str] | None:
    return [e.strip() for e in value.split(",") if e.strip()] if value else None


@notify_app.command("add-webhook")
def add_webhook(url: str = typer.Argument(..., help="http(s) URL that receives a signed JSON POST per event"),
                events: Optional[str] = EVENTS_OPT, as_json: bool = JSON_OPT) -> None:
    """Add a webhook for your jobs' events; each POST carries X-E2E-Signature (see `e2e notify secret`)."""
    target = _client().notify_add("webhook", url, _events(events))
    _dump(target) if as_json else out.print(f"webhook {target['id']} added: {target['address']} "
                                            f"({', '.join(target['events'])})")


@notify_app.command("add-email")
def add_email(address: str = typer.Argument(..., help="email address"), events: Optional[str] = EVENTS_OPT,
              as_json: bool = JSON_OPT) -> None:
    """Add an email address for your jobs' events (the engine's SMTP settings: E2E_SMTP_*)."""
    target = _client().notify_add("email", address, _events(events))
    _dump(target) if as_json else out.print(f"email {target['id']} added: {target['address']} "
                                            f"({', '.join(target['events'])})")


@notify_app.command("ls")
def list_targets(everyone: bool = typer.Option(False, "--all", help="admins: every user's targets"),
                 as_json: bool = JSON_OPT) -> None:
    """Your webhooks and email addresses."""
    rows = _client().notify_targets(everyone)
    if as_json:
        _dump(rows)
        return
    table = Table("ID", "KIND", "ADDRESS", "EVENTS", *(["OWNER"] if everyone else []), box=None)
    for r in rows:
        table.add_row(r["id"], r["kind"], r["address"], ",".join(r["events"]), *([r["owner"]] if everyone else []))
    out.print(table)


@notify_app.command("rm")
def remove_target(target_id: str = typer.Argument(..., help="the target's id (see `e2e notify ls`)")) -> None:
    """Remove a webhook or email address."""
    target = _client().notify_remove(target_id)
    out.print(f"removed {target['kind']} {target['id']}: {target['address']}")


@notify_app.command("test")
def test(as_json: bool = JSON_OPT) -> None:
    """Send a test notification to each of your targets now (see `e2e notify log` for the outcome)."""
    sent = _client().notify_test()
    if as_json:
        _dump(sent)
        return
    for s in sent:
        out.print(f"queued {s['delivery']} -> {s['address']}")


@notify_app.command("secret")
def secret(rotate: bool = typer.Option(False, "--rotate", help="replace it (receivers need the new one)")) -> None:
    """Show your webhook signing secret: receivers check X-E2E-Signature = sha256=HMAC-SHA256(secret, body)."""
    print(_client().notify_secret(rotate))


@notify_app.command("log")
def delivery_log(job: Optional[str] = typer.Option(None, "--job", help="only this job's deliveries"),
                 limit: int = typer.Option(50, help="newest entries to show"), as_json: bool = JSON_OPT) -> None:
    """The delivery log, newest first: one line per attempt (time, event, target, status, attempt, latency)."""
    rows = _client().notify_log(job, limit)
    if as_json:
        _dump(rows)
        return
    table = Table("TIME", "EVENT", "JOB", "TARGET", "STATUS", "ATTEMPT", "LATENCY", box=None)
    for r in rows:
        status = r["status"] + (f" ({r['error']})" if r.get("error") else "")
        table.add_row(time.strftime("%H:%M:%S", time.localtime(r.get("logged", 0))), str(r.get("event")),
                      r.get("job") or "-", f"{r.get('target')} {r.get('address')}", status, str(r.get("attempt")),
                      f"{r['latency_ms']:.0f} ms" if r.get("latency_ms") is not None else "-")
    out.print(table)
