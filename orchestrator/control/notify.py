"""The user's notification settings through the control surface: their targets (webhooks, email), the
signing secret, a test send, and the delivery log; each user sees only their own, an admin everyone's."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from orchestrator.model.errors import NotFound, UserError
from orchestrator.model.notify import EVENTS, TEST, check_email, check_events, check_url, payload
from orchestrator.worker import names

if TYPE_CHECKING:
    from orchestrator.control.service import ControlService


def check_spec_webhooks(service: ControlService, spec: Any) -> None:
    """A spec's `notify.webhooks` under this engine's private-address policy (the model checked the rest)."""
    block = getattr(spec, "notify", None)
    for i, url in enumerate(block.webhooks if block else []):
        check_url(url, allow_private=service.settings.notify_allow_private, resolve=True,
                  field=f"notify.webhooks.{i}")


def targets(service: ControlService, everyone: bool = False) -> list[dict[str, Any]]:
    """The caller's targets (an admin with `everyone`: every user's)."""
    store = service.store.notify
    if everyone and not service.admin:
        raise UserError("only an admin lists every user's notification targets")
    users = store.users() if everyone else [service.user]
    return [t.model_dump() for user in users for t in store.targets(user)]


def add(service: ControlService, kind: str, address: str, events: list[str] | None = None) -> dict[str, Any]:
    if kind == "webhook":
        address = check_url(address, allow_private=service.settings.notify_allow_private, resolve=True)
    elif kind == "email":
        address = check_email(address)
    else:
        raise UserError(f"kind: {kind!r} is not a notification target (webhook or email)")
    chosen = check_events(list(events), "events") if events else list(EVENTS)
    return service.store.notify.add_target(service.user, kind, address, chosen).model_dump()


def remove(service: ControlService, target_id: str) -> dict[str, Any]:
    store = service.store.notify
    owners = [service.user] + ([u for u in store.users() if u != service.user] if service.admin else [])
    for owner in owners:
        found = next((t for t in store.targets(owner) if t.id == target_id), None)
        if found:
            store.remove_target(owner, target_id)
            return found.model_dump()
    raise NotFound(f"no notification target {target_id!r} (see `e2e notify ls`)")


def secret(service: ControlService, rotate: bool = False) -> str:
    """The caller's webhook signing secret (shown only to them), rotated on request."""
    store = service.store.notify
    return store.rotate_secret(service.user) if rotate else store.secret(service.user)


def test(service: ControlService) -> list[dict[str, Any]]:
    """Send a `test` notification to each of the caller's targets now; the deliveries queued."""
    mine = service.store.notify.targets(service.user)
    if not mine:
        raise UserError("you have no notification targets: add one with `e2e notify add-webhook URL` "
                        "or `e2e notify add-email ADDRESS`")
    sent = []
    stamp = f"test-{uuid.uuid4().hex[:12]}"
    for target in mine:
        delivery = f"{stamp}.{target.id}"
        if not service.store.notify.claim(delivery, service.user):
            continue
        body = payload(event=TEST, kind=TEST, job={"id": "", "name": "", "owner": service.user},
                       data={"reason": f"a test from {service.user}"}, ts=time.time(), delivery=delivery,
                       link=service.settings.monitor_url + "/ui/")
        service.send(names.NOTIFY, {"delivery": delivery, "target": target.model_dump(), "body": body})
        sent.append({"delivery": delivery, "target": target.id, "address": target.address})
    return sent


def delivery_log(service: ControlService, job: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The delivery log, newest first: the caller's deliveries (an admin's: everyone's), one job's with `job`."""
    job_id = service.resolve(job) if job else None
    return service.store.notify.read_log(owner=None if service.admin else service.user,
                                         job=job_id, limit=max(1, min(limit, 1000)))
