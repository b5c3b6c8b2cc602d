"""Who may reach a job's desktop: the rules themselves live in the model (`orchestrator.model.access`, pure);
here they meet the store (per-user defaults, the address the engine sees) at submit time."""

from __future__ import annotations

from typing import Any

from orchestrator.model.access import (  # noqa: F401  (re-exported: the desktop's callers import them from here)
    EVERYWHERE,
    EVERYWHERE_NETWORKS,
    MY_IP,
    Network,
    allowed,
    is_everywhere,
    networks,
    normalise_rule,
    normalise_rules,
    parse_address,
    resolve,
    split_families,
)
from orchestrator.model.errors import UserError


def client_address(store: Any) -> str | None:
    """The address the engine sees this client connect from: 'My current IP' (None when unknown)."""
    return store.client_address()


# -- per-user defaults, used when a job spec sets no desktop.access
def user_rules(store: Any, user: str) -> list[str] | None:
    return store.access.rules(user)


def set_user_rules(store: Any, user: str, rules: list[str] | None) -> None:
    store.access.set_rules(user, None if rules is None else normalise_rules(rules))


def resolve_for_submit(spec: Any, store: Any, user: str, address: str | None = None) -> Any:
    """The spec with desktop.access made concrete at submit: the user's default when unset, 'my-ip' resolved
    to the address the engine sees now (an address later on may differ: that is the point of the rule): the
    caller's `address` when known (the API's client), else this process's address as Redis sees it."""
    rules = spec.desktop.access or user_rules(store, user) or [EVERYWHERE]
    mine = (address or client_address(store)) if MY_IP in rules else None
    if MY_IP in rules and mine is None:
        raise UserError("desktop.access: my-ip could not be resolved (the engine cannot see your address); "
                        "give a CIDR instead")
    cidrs = resolve(rules, mine)
    desktop = spec.desktop.model_copy(update={"access": cidrs})
    return spec.model_copy(update={"desktop": desktop})
