"""Notifications, the pure part: which engine events are worth one, the targets (webhooks, email), the job
spec's `notify:` block, URL checks, the webhook body and its signature, and the retry schedule."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.model.errors import UserError
from orchestrator.model.events import EventKind

# The notification events (what a user subscribes to), each derived from one engine event below.
DESKTOP_READY = "desktop.ready"
RUN_STARTED = "run.started"
RUN_COMPLETED = "run.completed"
RUN_FAILED = "run.failed"
JOB_FAILED = "job.failed"
RULE_FIRED = "rule.fired"
LIMIT_WARNING = "limit.warning"   # walltime or idle_shutdown is about to end the job
TEST = "test"                     # `e2e notify test`: sent to one user's targets on demand
EVENTS = (DESKTOP_READY, RUN_STARTED, RUN_COMPLETED, RUN_FAILED, JOB_FAILED, RULE_FIRED, LIMIT_WARNING)
JOB_DEFAULT_EVENTS = [RUN_COMPLETED, RUN_FAILED]

# The engine event kinds the store mirrors into the notification outbox (all others never cost a thing).
NOTIFIABLE_KINDS = frozenset({EventKind.JOB_STATE.value, EventKind.RUN_STATE.value, EventKind.DESKTOP.value,
                              EventKind.WARNING.value, EventKind.RULE_FIRED.value})

MAX_URL = 2048
MAX_EMAIL = 254
MAX_TARGETS = 20     # per user, and per job block
SIGNATURE_HEADER = "X-E2E-Signature"
EVENT_HEADER = "X-E2E-Event"
DELIVERY_HEADER = "X-E2E-Delivery"


def notification_event(kind: str, data: dict[str, Any]) -> str | None:
    """The notification event an engine event (kind, data) stands for, or None when it is not worth one."""
    state = str(data.get("state", ""))
    if kind == EventKind.RUN_STATE.value:
        return {"RUNNING": RUN_STARTED, "COMPLETED": RUN_COMPLETED, "FAILED": RUN_FAILED}.get(state)
    if kind == EventKind.JOB_STATE.value:
        return JOB_FAILED if state == "FAILED" else None
    if kind == EventKind.DESKTOP.value:
        # a ready event that only says the password changed is not the desktop becoming ready
        return DESKTOP_READY if state == "ready" and "message" not in data else None
    if kind == EventKind.WARNING.value:
        return LIMIT_WARNING if data.get("limit") else None
    if kind == EventKind.RULE_FIRED.value:
        return RULE_FIRED
    return None


def check_events(events: list[str], field: str) -> list[str]:
    """`events` if every one is a known notification event, else a UserError naming the field."""
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise UserError(f"{field}: unknown event {unknown[0]!r}; known events: {', '.join(EVENTS)}")
    return list(dict.fromkeys(events))


def check_url(url: str, *, allow_private: bool = True, resolve: bool = False, field: str = "url") -> str:
    """A webhook URL as given, or a UserError naming the field: http or https, a host, at most MAX_URL
    characters, no credentials in it. Without `allow_private`, a host that is (or with `resolve`, resolves
    to) a loopback, private, link-local or reserved address is refused: the SSRF guard for shared clusters."""
    if not isinstance(url, str) or not url:
        raise UserError(f"{field}: a webhook URL is required")
    if len(url) > MAX_URL:
        raise UserError(f"{field}: a webhook URL is at most {MAX_URL} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise UserError(f"{field}: a webhook URL has no spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UserError(f"{field}: a webhook URL must start with http:// or https://")
    if not parts.hostname:
        raise UserError(f"{field}: a webhook URL needs a host")
    if parts.username or parts.password:
        raise UserError(f"{field}: put no credentials in a webhook URL (the signature authenticates the engine)")
    try:
        _ = parts.port  # urlsplit checks the port only when asked
    except ValueError:
        raise UserError(f"{field}: the webhook URL's port is not a number from 0 to 65535") from None
    if not allow_private:
        for address in _addresses(parts.hostname, resolve):
            if not address.is_global:
                raise UserError(f"{field}: {parts.hostname} is a private or local address, and this engine "
                                "delivers only to public ones (E2E_NOTIFY_ALLOW_PRIVATE=false)")
    return url


def _addresses(host: str, resolve: bool) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return [ipaddress.ip_address("127.0.0.1")]
    if not resolve:
        return []
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return []  # an unknown host fails at delivery, and is logged there
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def check_email(address: str, field: str = "email") -> str:
    """An email address as given (one @, a dotted-or-local domain, no spaces, bounded), else a UserError."""
    if not isinstance(address, str) or len(address) > MAX_EMAIL or address.count("@") != 1 \
            or any(c.isspace() or ord(c) < 32 or c in "<>,;\"" for c in address):
        raise UserError(f"{field}: {str(address)[:80]!r} is not an email address (like ana@example.org)")
    local, domain = address.split("@")
    if not local or not domain or domain.startswith(".") or domain.endswith("."):
        raise UserError(f"{field}: {address!r} is not an email address (like ana@example.org)")
    return address


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NotifySpec(_Strict):
    """A job's `notify:` block: which of its events go where (besides its owner's own targets)."""

    events: list[str] = Field(default_factory=lambda: list(JOB_DEFAULT_EVENTS), max_length=len(EVENTS),
                              description=f"events to send: {', '.join(EVENTS)}")
    email: list[str] = Field(default_factory=list, max_length=MAX_TARGETS, description="addresses to email")
    webhooks: list[str] = Field(default_factory=list, max_length=MAX_TARGETS,
                                description="URLs to POST to, signed with the owner's secret")

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        try:
            return check_events(value, "events")
        except UserError as exc:
            raise ValueError(str(exc).removeprefix("events: ")) from None

    @field_validator("email")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        try:
            return [check_email(a) for a in value]
        except UserError as exc:
            raise ValueError(str(exc).removeprefix("email: ")) from None

    @field_validator("webhooks")
    @classmethod
    def _webhooks(cls, value: list[str]) -> list[str]:
        try:
            return [check_url(u) for u in value]  # the private-address policy is applied at submit (settings)
        except UserError as exc:
            raise ValueError(str(exc).removeprefix("url: ")) from None


class Target(_Strict):
    """One place a notification goes: a user's stored target (id `w…`/`m…`) or one of a job's (id `job-…`)."""

    id: str
    kind: Literal["webhook", "email"]
    address: str                       # the URL or the email address
    events: list[str] = Field(default_factory=lambda: list(EVENTS))
    owner: str = ""

    def wants(self, event: str) -> bool:
        return event == TEST or event in self.events


def job_targets(block: dict[str, Any] | None, owner: str) -> list[Target]:
    """The targets of a stored job spec's `notify:` block (ids stable across reads: a hash of the address)."""
    if not block:
        return []
    events = list(block.get("events") or JOB_DEFAULT_EVENTS)
    out = []
    for kind, field in (("webhook", "webhooks"), ("email", "email")):
        for address in block.get(field) or []:
            digest = hashlib.sha256(f"{kind}:{address}".encode()).hexdigest()[:10]
            out.append(Target(id=f"job-{digest}", kind=kind, address=address, events=events, owner=owner))
    return out


def payload(*, event: str, kind: str, job: dict[str, Any], data: dict[str, Any], ts: float, delivery: str,
            link: str) -> dict[str, Any]:
    """The webhook body (and the email's facts): named fields only, never the spec or a raw event, so no
    secret (a licence key, a VNC password, a token) can ride along."""
    body: dict[str, Any] = {
        "event": event, "kind": kind, "delivery": delivery, "time": ts,
        "job": {"id": job.get("id", ""), "name": job.get("name", ""), "owner": job.get("owner", "")},
        "run": data.get("run"), "state": data.get("state"), "reason": data.get("reason") or data.get("message"),
        "link": link,
    }
    if event == RULE_FIRED:
        body["rule"] = {k: data.get(k) for k in ("rule", "action", "values")}
    if event == LIMIT_WARNING:
        body["limit"] = data.get("limit")
    if event == DESKTOP_READY:
        body["desktop_url"] = _bare_url(data.get("url"))
    return body


def _bare_url(url: Any) -> str | None:
    """A desktop URL without its fragment (where the token and password would be), should one ever carry it."""
    return str(url).split("#", 1)[0] if url else None


def encode_body(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True, default=str).encode()


def signature(secret: str, body: bytes) -> str:
    """The X-E2E-Signature header's value: sha256=<hex HMAC-SHA256 of the exact body bytes>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return hmac.compare_digest(signature(secret, body), header or "")


def retry_delay(attempt: int, base: float, cap: float = 300.0) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): base, 2 base, 4 base, ... at most `cap`."""
    return min(cap, base * (2 ** (attempt - 1)))


def email_text(body: dict[str, Any]) -> tuple[str, str]:
    """The email's subject and plain-text body, from the same facts as the webhook's."""
    job = body["job"]
    subject = f"[e2e] {job['name'] or job['id']}: {body['event']}"
    lines = [f"Event:  {body['event']}", f"Job:    {job['name']} ({job['id']}), owner {job['owner']}"]
    if body.get("run"):
        lines.append(f"Run:    {body['run']}")
    if body.get("state"):
        lines.append(f"State:  {body['state']}")
    if body.get("reason"):
        lines.append(f"Reason: {body['reason']}")
    if body.get("rule"):
        lines.append(f"Rule:   {json.dumps(body['rule'], default=str)}")
    lines += [f"Time:   {body['time']}", f"Monitor: {body['link']}", "", f"Delivery {body['delivery']}"]
    return subject, "\n".join(lines) + "\n"
