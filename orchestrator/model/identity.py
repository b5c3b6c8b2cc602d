"""Who a job runs as: the OS account of its owner (name, uid, gid, groups, home), as data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Account:
    """An OS account every process and file of a job belongs to. Resolved on the engine host by name
    (cluster/identity.py); nodes are expected to share the same accounts (LDAP/SSSD, or the same /etc/passwd)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    home: str = "/"
    shell: str = "/bin/sh"
