"""Notification state in Redis (`store.notify`): each user's targets and signing secret, the outbox every
notifiable event is mirrored into, the at-most-once delivery claims, and the delivery log."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import redis

from orchestrator.model.errors import NotFound, UserError
from orchestrator.model.notify import MAX_TARGETS, Target
from orchestrator.store.keys import KeyNames

GROUP = "dispatch"          # the outbox's consumer group: each entry goes to one dispatcher
OUTBOX_MAXLEN = 10_000
LOG_MAXLEN = 5_000
CLAIM_TTL = 7 * 24 * 3600   # a claim outlives any redelivery of its outbox entry


class Notifications:
    def __init__(self, client: Any, keys: KeyNames) -> None:
        self._r = client
        self._keys = keys

    # -- a user's targets
    def targets(self, user: str) -> list[Target]:
        raw = self._r.hgetall(self._keys.notify_targets(user))
        return sorted((Target.model_validate_json(v) for v in raw.values()), key=lambda t: t.id)

    def add_target(self, user: str, kind: str, address: str, events: list[str]) -> Target:
        """Store a validated target (the caller checked address and events); the same address again replaces
        the earlier target's events, keeping its id."""
        key = self._keys.notify_targets(user)
        current = self.targets(user)
        same = next((t for t in current if t.kind == kind and t.address == address), None)
        if same is None and len(current) >= MAX_TARGETS:
            raise UserError(f"a user has at most {MAX_TARGETS} notification targets; remove one first")
        target_id = same.id if same else ("w" if kind == "webhook" else "m") + secrets.token_hex(3)
        target = Target(id=target_id, kind=kind, address=address, events=events, owner=user)
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(key, target_id, target.model_dump_json())
        pipe.sadd(self._keys.notify_users, user)
        pipe.execute()
        return target

    def remove_target(self, user: str, target_id: str) -> None:
        if not self._r.hdel(self._keys.notify_targets(user), target_id):
            raise NotFound(f"no notification target {target_id!r} (see `e2e notify ls`)")

    def users(self) -> list[str]:
        """Every user who ever stored a target (the admin's listing)."""
        return sorted(self._r.smembers(self._keys.notify_users))

    # -- a user's signing secret (its own key: no listing or event ever carries it)
    def secret(self, user: str) -> str:
        """The user's webhook signing secret, created on first use."""
        key = self._keys.notify_secret(user)
        self._r.set(key, secrets.token_hex(32), nx=True)
        return str(self._r.get(key))

    def rotate_secret(self, user: str) -> str:
        value = secrets.token_hex(32)
        self._r.set(self._keys.notify_secret(user), value)
        return value

    # -- the outbox (written by JobStore beside the job's own stream; read by the dispatchers)
    def read_outbox(self, consumer: str, *, block_ms: int, count: int = 50) -> list[tuple[str, dict[str, str]]]:
        """New outbox entries for this consumer (each entry reaches one consumer of the group)."""
        try:
            reply = self._r.xreadgroup(GROUP, consumer, {self._keys.notify_outbox: ">"}, count=count,
                                       block=block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()
            return []
        return list(reply[0][1]) if reply else []

    def ensure_group(self) -> None:
        """The consumer group, from the outbox's first entry: what was written while no dispatcher ran (every
        worker down) is still delivered when one starts (the outbox is capped, so this is bounded)."""
        try:
            self._r.xgroup_create(self._keys.notify_outbox, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def reclaim(self, consumer: str, min_idle_ms: int, count: int = 50) -> list[tuple[str, dict[str, str]]]:
        """Entries a dead dispatcher read but never acknowledged, now this consumer's."""
        try:
            reply = self._r.xautoclaim(self._keys.notify_outbox, GROUP, consumer, min_idle_ms, "0-0", count=count)
        except redis.ResponseError:
            return []
        return [(i, f) for i, f in reply[1] if f]

    def ack(self, entry_id: str) -> None:
        pipe = self._r.pipeline(transaction=False)
        pipe.xack(self._keys.notify_outbox, GROUP, entry_id)
        pipe.xdel(self._keys.notify_outbox, entry_id)
        pipe.execute()

    # -- at most once per (event, target)
    def claim(self, delivery: str, holder: str) -> bool:
        """True for the one caller that claims `delivery` (an outbox entry id and a target id); every later
        caller, in any process, gets False."""
        return bool(self._r.set(self._keys.notify_claim(delivery), holder, nx=True, ex=CLAIM_TTL))

    # -- the delivery log: one entry per attempt, newest first
    def log(self, entry: dict[str, Any]) -> None:
        pipe = self._r.pipeline(transaction=False)
        pipe.lpush(self._keys.notify_log, json.dumps({"logged": time.time(), **entry}, default=str))
        pipe.ltrim(self._keys.notify_log, 0, LOG_MAXLEN - 1)
        pipe.execute()

    def read_log(self, *, owner: str | None = None, job: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first; `owner` None: everyone's (the admin's view)."""
        out: list[dict[str, Any]] = []
        for raw in self._r.lrange(self._keys.notify_log, 0, LOG_MAXLEN - 1):
            entry = json.loads(raw)
            if (owner is None or entry.get("owner") == owner) and (job is None or entry.get("job") == job):
                out.append(entry)
                if len(out) >= limit:
                    break
        return out
