"""Per-user access material: registered SSH public keys and default desktop access rules (CIDRs)."""

from __future__ import annotations

import json
from typing import Any

from orchestrator.store.keys import KeyNames


class SshKeys:
    """A user's registered keys (`store.ssh_keys`): a hash fingerprint -> key record (JSON). Validation is
    the caller's (desktop.keys parses and checks a key before it is stored)."""

    def __init__(self, client: Any, keys: KeyNames) -> None:
        self._r = client
        self._keys = keys

    def put(self, user: str, fingerprint: str, record: dict[str, Any]) -> None:
        self._r.hset(self._keys.ssh_keys(user), fingerprint, json.dumps(record))

    def all(self, user: str) -> dict[str, dict[str, Any]]:
        """fingerprint -> record, in no particular order."""
        return {fp: json.loads(v) for fp, v in self._r.hgetall(self._keys.ssh_keys(user)).items()}

    def delete(self, user: str, *fingerprints: str) -> int:
        return int(self._r.hdel(self._keys.ssh_keys(user), *fingerprints)) if fingerprints else 0


class AccessRules:
    """A user's default desktop access rules (`store.access`), used when a job spec sets none; stored as given
    (the caller normalises them)."""

    def __init__(self, client: Any, keys: KeyNames) -> None:
        self._r = client
        self._keys = keys

    def rules(self, user: str) -> list[str] | None:
        raw = self._r.get(self._keys.access(user))
        return json.loads(raw) if raw else None

    def set_rules(self, user: str, rules: list[str] | None) -> None:
        """Store the user's rules; None removes them."""
        if rules is None:
            self._r.delete(self._keys.access(user))
        else:
            self._r.set(self._keys.access(user), json.dumps(rules))
