"""API users and their tokens: stored by the store's users family (`store.users`); re-exported for the API."""

from __future__ import annotations

from orchestrator.store.users import TOKEN_PREFIX, USER_NAME, User, Users, hash_token

__all__ = ["TOKEN_PREFIX", "USER_NAME", "User", "Users", "hash_token"]
