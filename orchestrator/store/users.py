"""API users and their tokens: created by an admin, stored hashed, revocable.

Accounts are `account:<name>` hashes; a token is stored only as its sha256, `token:<digest>` -> its user
(with the user's admin flag, so one read authenticates), and `account-tokens:<name>` is the set of a
user's digests (for revoking them all)."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from orchestrator.model.errors import NotFound, UserError
from orchestrator.store.keys import KeyNames

USER_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
TOKEN_PREFIX = "e2e_"


@dataclass(frozen=True)
class User:
    name: str
    admin: bool
    os_user: str = ""  # the OS account the user's jobs run as (a root engine); "" = not mapped yet
    job: str = ""      # a job-scoped token's one job ("" = the user's own token, every job of theirs)


def check_name(name: str) -> None:
    """A user name the store (and `useradd`) accepts, or a UserError saying which."""
    if not USER_NAME.match(name or ""):
        raise UserError(f"user name {name!r}: use lower-case letters, digits, '_', '.', '-' (at most 32), "
                        "starting with a letter or '_'")


def hash_token(token: str) -> str:
    """sha256 is enough here: tokens are 256 random bits, so there is nothing to brute-force."""
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    """The store's users family (`store.users`). The Redis client decodes responses (JobStore's does)."""

    def __init__(self, client: Any, keys: KeyNames) -> None:
        self._r = client
        self._keys = keys

    def create(self, name: str, admin: bool = False, os_user: str = "") -> str:
        """A new user with a first token (returned once, stored only as its hash), mapped to an OS account."""
        check_name(name)
        if not self._r.hsetnx(self._keys.account(name), "created_at", time.time()):
            raise UserError(f"user {name!r} exists already; `e2e admin token {name}` issues another token")
        self._r.hset(self._keys.account(name), mapping={"admin": int(admin), "os_user": os_user})
        return self.issue(name)

    def set_os_user(self, name: str, os_user: str) -> None:
        """Map an existing user to an OS account (checked by the caller: it exists and is not root)."""
        self.get(name)
        self._r.hset(self._keys.account(name), "os_user", os_user)

    def issue(self, name: str, label: str = "") -> str:
        """Another token for an existing user."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = hash_token(token)
        pipe = self._r.pipeline()
        pipe.hset(self._keys.token(digest), mapping={"user": name, "created_at": time.time(), "label": label,
                                                     "admin": int(self.get(name).admin)})  # one read authenticates
        pipe.sadd(self._keys.account_tokens(name), digest)
        pipe.execute()
        return token

    def issue_for_job(self, name: str, job_id: str) -> str:
        """A token that acts for `name` on one job only, never as an admin (the desktop session's, the panel's).
        Its end with the job is checked on use by the API; `revoke_job` deletes them when the job ends."""
        self.get(name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = hash_token(token)
        pipe = self._r.pipeline()
        pipe.hset(self._keys.token(digest), mapping={"user": name, "created_at": time.time(), "label": f"job {job_id}",
                                                     "admin": 0, "job": job_id})
        pipe.sadd(self._keys.account_tokens(name), digest)
        pipe.sadd(self._keys.job_tokens(job_id), digest)
        pipe.execute()
        return token

    def revoke_job(self, job_id: str) -> int:
        """Revoke every token scoped to the job; how many there were."""
        digests = list(self._r.smembers(self._keys.job_tokens(job_id)))
        pipe = self._r.pipeline()
        for digest in digests:
            name = self._r.hget(self._keys.token(digest), "user")
            pipe.delete(self._keys.token(digest))
            if name:
                pipe.srem(self._keys.account_tokens(name), digest)
        pipe.delete(self._keys.job_tokens(job_id))
        pipe.execute()
        return len(digests)

    def get(self, name: str) -> User:
        raw = self._r.hgetall(self._keys.account(name))
        if not raw:
            raise NotFound(f"no user {name!r}")
        return User(name=name, admin=raw.get("admin") == "1", os_user=raw.get("os_user") or "")

    def authenticate(self, token: str | None) -> User | None:
        """The token's user, or None for a missing, unknown or revoked token."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        entry = self._r.hgetall(self._keys.token(hash_token(token)))
        if not entry.get("user"):
            return None
        return User(name=entry["user"], admin=entry.get("admin") == "1", job=entry.get("job") or "")

    def revoke(self, token: str) -> str:
        """Revoke one token; the user it belonged to."""
        digest = hash_token(token)
        name = self._r.hget(self._keys.token(digest), "user")
        if name is None:
            raise NotFound("no such token (already revoked?)")
        pipe = self._r.pipeline()
        pipe.delete(self._keys.token(digest))
        pipe.srem(self._keys.account_tokens(name), digest)
        pipe.execute()
        return name

    def revoke_all(self, name: str) -> int:
        """Revoke every token of a user (the user stays, owning their jobs); how many were revoked."""
        self.get(name)
        digests = list(self._r.smembers(self._keys.account_tokens(name)))
        pipe = self._r.pipeline()
        for digest in digests:
            pipe.delete(self._keys.token(digest))
        pipe.delete(self._keys.account_tokens(name))
        pipe.execute()
        return len(digests)

    def list(self) -> list[dict[str, Any]]:
        rows = []
        for key in self._r.scan_iter(match=self._keys.account("*"), count=500):
            name = self._keys.account_name(key)
            user = self.get(name)
            rows.append({"name": name, "admin": user.admin, "os_user": user.os_user,
                         "tokens": self._r.scard(self._keys.account_tokens(name))})
        return sorted(rows, key=lambda r: r["name"])
