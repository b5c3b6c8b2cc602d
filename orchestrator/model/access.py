"""Desktop access rules, pure: CIDR rules (Everywhere, My current IP, custom IPv4/IPv6 lists), their canonical
stored form, and the checks (no I/O: the spec validates with them, the desktop and the gateway enforce them)."""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable

from orchestrator.model.errors import UserError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

EVERYWHERE = "everywhere"
MY_IP = "my-ip"
_ALIASES = {"everywhere": EVERYWHERE, "anywhere": EVERYWHERE, "my-ip": MY_IP, "my current ip": MY_IP,
            "my-current-ip": MY_IP}
EVERYWHERE_NETWORKS = ("0.0.0.0/0", "::/0")


def normalise_rule(value: Any) -> str:
    """One access rule as stored: 'everywhere', 'my-ip', or a CIDR in canonical form; ValueError otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not an access rule; use everywhere, my-ip, or a CIDR such as 203.0.113.0/24")
    text = value.strip()
    alias = _ALIASES.get(text.lower())
    if alias:
        return alias
    try:
        # strict=False: 10.1.2.3/8 means the network 10.0.0.0/8, as firewalls read it
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address or CIDR (e.g. 203.0.113.0/24, 2001:db8::/32), "
                         "nor everywhere or my-ip") from None


def normalise_rules(values: Any) -> list[str]:
    """A list of rules (a single string is a list of one), de-duplicated in order."""
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError("must be a non-empty list of rules: everywhere, my-ip, or CIDRs")
    out: list[str] = []
    for value in values:
        rule = normalise_rule(value)
        if rule not in out:
            out.append(rule)
    return out


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as a socket reports it ('::ffff:10.0.0.1' counts as the IPv4 address it carries)."""
    addr = ipaddress.ip_address(text.strip().strip("[]").split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def resolve(rules: Iterable[str], my_address: str | None = None) -> list[str]:
    """Concrete CIDRs for stored rules: 'everywhere' becomes both default routes, 'my-ip' the user's /32 or /128."""
    out: list[str] = []
    for rule in rules:
        if rule == EVERYWHERE:
            nets = list(EVERYWHERE_NETWORKS)
        elif rule == MY_IP:
            if not my_address:
                raise UserError("access rule my-ip needs your current address, which is unknown here; "
                                "give a CIDR instead")
            nets = [str(ipaddress.ip_network(parse_address(my_address)))]
        else:
            nets = [rule]
        out += [n for n in nets if n not in out]
    return out


def networks(cidrs: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def allowed(address: str, cidrs: Iterable[str]) -> bool:
    """Whether a client address lies inside one of the CIDRs (an unparsable address never does)."""
    try:
        addr = parse_address(address)
    except ValueError:
        return False
    return any(addr.version == net.version and addr in net for net in networks(cidrs))


def split_families(cidrs: Iterable[str]) -> tuple[list[str], list[str]]:
    """(IPv4 CIDRs, IPv6 CIDRs), for firewall sets that hold one family each."""
    nets = networks(cidrs)
    return [str(n) for n in nets if n.version == 4], [str(n) for n in nets if n.version == 6]


def is_everywhere(cidrs: Iterable[str]) -> bool:
    v4, v6 = split_families(cidrs)
    return "0.0.0.0/0" in v4 and "::/0" in v6
