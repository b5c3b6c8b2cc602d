"""Notifications, the acting part: the dispatcher that turns outbox entries into one delivery task per
(event, target), claimed at most once, and the delivery itself (a signed webhook POST, or an email).

The dispatcher runs as a thread in each Celery worker's main process, reading the store's outbox through a
consumer group (so each entry reaches one dispatcher) and claiming every (entry, target) in Redis before it
sends its task (so an entry redelivered after a dispatcher died sends nothing twice). The engine's own
paths only pay for the outbox write beside the event; nothing here runs on them.
"""

from __future__ import annotations

import json
import logging
import smtplib
import threading
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from typing import Any, Callable

from orchestrator.model.errors import NotFound, UserError
from orchestrator.model.notify import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    Target,
    check_url,
    email_text,
    encode_body,
    job_targets,
    notification_event,
    payload,
    signature,
)
from orchestrator.model.records import Job
from orchestrator.model.settings import Settings
from orchestrator.store.jobs import JobStore

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], None]   # sends one delivery task (its single argument)
RECLAIM_EVERY = 15.0                      # seconds between looks for a dead dispatcher's unacknowledged entries
RECLAIM_IDLE_MS = 30_000


def targets_for(store: JobStore, job: Job, event: str) -> list[Target]:
    """The owner's own targets and the job's `notify:` block's, that want `event`."""
    mine = store.notify.targets(job.owner) if job.owner else []
    ours = job_targets((job.spec or {}).get("notify"), job.owner)
    return [t for t in [*mine, *ours] if t.wants(event)]


def delivery_task(*, delivery: str, target: Target, body: dict[str, Any]) -> dict[str, Any]:
    """A delivery task's one argument: nothing secret in it (the signing secret is read when sending)."""
    return {"delivery": delivery, "target": target.model_dump(), "body": body}


class Dispatcher:
    """Reads the outbox and sends one delivery task per (event, target) that wants it, at most once."""

    def __init__(self, store: JobStore, settings: Settings, send: Send, consumer: str) -> None:
        self.store = store
        self.settings = settings
        self.send = send
        self.consumer = consumer

    def dispatch(self, entry_id: str, fields: dict[str, str]) -> int:
        """Handle one outbox entry; the number of deliveries this call sent. Always acknowledges it."""
        sent = 0
        try:
            data = json.loads(fields.get("data") or "{}")
            event = notification_event(fields.get("kind", ""), data)
            job = self.store.get_job(fields.get("job", "")) if event else None
        except (NotFound, ValueError):
            event = job = None
        if event and job:
            body_base = dict(event=event, kind=fields["kind"], data=data, ts=float(fields.get("ts") or time.time()),
                             job={"id": job.id, "name": job.name, "owner": job.owner},
                             link=f"{self.settings.monitor_url}/ui/jobs/{job.id}")
            for target in targets_for(self.store, job, event):
                delivery = f"{entry_id}.{target.id}"
                if self.store.notify.claim(delivery, self.consumer):
                    self.send(delivery_task(delivery=delivery, target=target,
                                            body=payload(delivery=delivery, **body_base)))
                    sent += 1
        self.store.notify.ack(entry_id)
        return sent

    def run(self, stop: threading.Event, block_ms: int = 1000) -> None:
        """Dispatch until `stop` is set; a failing pass (Redis away) is logged and retried after a pause."""
        self.store.notify.ensure_group()
        last_reclaim = 0.0
        while not stop.is_set():
            try:
                entries = self.store.notify.read_outbox(self.consumer, block_ms=block_ms)
                if time.monotonic() - last_reclaim > RECLAIM_EVERY:
                    last_reclaim = time.monotonic()
                    entries += self.store.notify.reclaim(self.consumer, RECLAIM_IDLE_MS)
                for entry_id, fields in entries:
                    self.dispatch(entry_id, fields)
            except Exception:  # noqa: BLE001 - the dispatcher outlives a Redis restart or a bad entry
                log.exception("notification dispatcher pass failed; retrying")
                stop.wait(1.0)


class DeliveryFailed(Exception):
    """One attempt did not deliver (the receiver's status, a refused connection, an SMTP error)."""


def deliver(store: JobStore, settings: Settings, task: dict[str, Any]) -> None:
    """One attempt at one delivery; raises DeliveryFailed with a short reason (no secret in it)."""
    target = Target.model_validate(task["target"])
    body = task["body"]
    if target.kind == "webhook":
        if not settings.notify_allow_private:  # again now: the name may resolve elsewhere than when it was added
            try:
                check_url(target.address, allow_private=False, resolve=True)
            except UserError as exc:
                raise DeliveryFailed(str(exc)) from None
        post_webhook(target.address, body, store.notify.secret(target.owner), settings.notify_timeout)
    else:
        send_email(settings, target.address, body)


def post_webhook(url: str, body: dict[str, Any], secret: str, timeout: float) -> int:
    """POST the JSON body signed with `secret`; the receiver's status, or DeliveryFailed for anything not 2xx."""
    raw = encode_body(body)
    request = urllib.request.Request(url, data=raw, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "e2e-notify/1",
        SIGNATURE_HEADER: signature(secret, raw), EVENT_HEADER: str(body.get("event")),
        DELIVERY_HEADER: str(body.get("delivery")),
    })
    opener = urllib.request.build_opener(_NoRedirect)  # a redirect could lead the POST somewhere unvalidated
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {str(exc)[:200]}") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def send_email(settings: Settings, address: str, body: dict[str, Any]) -> None:
    if not settings.smtp_host:
        raise DeliveryFailed("no SMTP server configured (E2E_SMTP_HOST)")
    subject, text = email_text(body)
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = address
    message["Subject"] = subject
    message["X-E2E-Delivery"] = str(body.get("delivery"))
    message.set_content(text)
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.notify_timeout) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password.get_secret_value())
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {str(exc)[:200]}") from None


def attempt(store: JobStore, settings: Settings, task: dict[str, Any], number: int, worker: str) -> bool:
    """Attempt `number` of a delivery, at most once even if its task is redelivered, and logged; whether it
    delivered (False: retry later, unless this was the last attempt)."""
    if not store.notify.claim(f"{task['delivery']}#{number}", worker):
        return True  # another worker already made this attempt; its outcome is logged and retried there
    target = Target.model_validate(task["target"])
    body = task["body"]
    entry = {"delivery": task["delivery"], "event": body.get("event"), "job": body["job"]["id"],
             "owner": target.owner, "target": target.id, "kind": target.kind, "address": target.address,
             "attempt": number}
    started = time.time()
    try:
        deliver(store, settings, task)
    except DeliveryFailed as exc:
        last = number >= settings.notify_attempts
        store.notify.log({**entry, "status": "gave up" if last else "retrying", "error": str(exc),
                          "latency_ms": round((time.time() - float(body.get("time") or started)) * 1000, 1)})
        return False
    store.notify.log({**entry, "status": "delivered",
                      "latency_ms": round((time.time() - float(body.get("time") or started)) * 1000, 1)})
    return True
