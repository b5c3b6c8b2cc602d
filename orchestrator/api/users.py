"""API users and their tokens: created by an admin, stored hashed in Redis, revocable."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from orchestrator.model.errors import NotFound, UserError

USER_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
TOKEN_PREFIX = "e2e_"


@dataclass(frozen=True)
class User:
    name: str
    admin: bool


def hash_token(token: str) -> str:
    """sha256 is enough here: tokens are 256 random bits, so there is nothing to brute-force."""
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    """accounts: e2e:account:<name> (hash); tokens: e2e:token:<sha256> -> name, e2e:account-tokens:<name> (set).
    The Redis client decodes responses (JobStore.r does)."""

    def __init__(self, redis_client: Any, prefix: str = "e2e") -> None:
        self.r = redis_client
        self.prefix = prefix

    def _user(self, name: str) -> str:
        return f"{self.prefix}:account:{name}"

    def _token(self, digest: str) -> str:
        return f"{self.prefix}:token:{digest}"

    def _tokens_of(self, name: str) -> str:
        return f"{self.prefix}:account-tokens:{name}"

    def create(self, name: str, admin: bool = False) -> str:
        """A new user with a first token (returned once, stored only as its hash)."""
        if not USER_NAME.match(name or ""):
            raise UserError(f"user name {name!r}: use lower-case letters, digits, '_', '.', '-' (at most 32), "
                            "starting with a letter or '_'")
        if not self.r.hsetnx(self._user(name), "created_at", time.time()):
            raise UserError(f"user {name!r} exists already; `e2e admin token {name}` issues another token")
        self.r.hset(self._user(name), mapping={"admin": int(admin)})
        return self.issue(name)

    def issue(self, name: str, label: str = "") -> str:
        """Another token for an existing user."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = hash_token(token)
        pipe = self.r.pipeline()
        pipe.hset(self._token(digest), mapping={"user": name, "created_at": time.time(), "label": label,
                                                "admin": int(self.get(name).admin)})  # one read authenticates
        pipe.sadd(self._tokens_of(name), digest)
        pipe.execute()
        return token

    def get(self, name: str) -> User:
        raw = self.r.hgetall(self._user(name))
        if not raw:
            raise NotFound(f"no user {name!r}")
        return User(name=name, admin=raw.get("admin") == "1")

    def authenticate(self, token: str | None) -> User | None:
        """The token's user, or None for a missing, unknown or revoked token."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        entry = self.r.hgetall(self._token(hash_token(token)))
        if not entry.get("user"):
            return None
        return User(name=entry["user"], admin=entry.get("admin") == "1")

    def revoke(self, token: str) -> str:
        """Revoke one token; the user it belonged to."""
        digest = hash_token(token)
        name = self.r.hget(self._token(digest), "user")
        if name is None:
            raise NotFound("no such token (already revoked?)")
        pipe = self.r.pipeline()
        pipe.delete(self._token(digest))
        pipe.srem(self._tokens_of(name), digest)
        pipe.execute()
        return name

    def revoke_all(self, name: str) -> int:
        """Revoke every token of a user (the user stays, owning their jobs); how many were revoked."""
        self.get(name)
        digests = list(self.r.smembers(self._tokens_of(name)))
        pipe = self.r.pipeline()
        for digest in digests:
            pipe.delete(self._token(digest))
        pipe.delete(self._tokens_of(name))
        pipe.execute()
        return len(digests)

    def list(self) -> list[dict[str, Any]]:
        rows = []
        for key in self.r.scan_iter(match=self._user("*"), count=500):
            name = key.rsplit(":", 1)[1]
            user = self.get(name)
            rows.append({"name": name, "admin": user.admin, "tokens": self.r.scard(self._tokens_of(name))})
        return sorted(rows, key=lambda r: r["name"])
