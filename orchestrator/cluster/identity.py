"""Running as a job's owner: account lookup, the privilege-dropping command prefix, the clean job environment."""

from __future__ import annotations

import grp
import os
import pwd

from orchestrator.model.errors import UserError
from orchestrator.model.identity import Account

# The only variables a job process starts with (besides the job's own E2E_* values and the solver's
# settings, which the wrapper exports): nothing of the engine's environment (its Redis URL, its keys) leaks.
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"


def multi_user() -> bool:
    """Whether the engine can run jobs as other accounts (it runs as root); else single-user mode."""
    return os.geteuid() == 0


def lookup(name: str) -> Account:
    """The OS account of that name on the engine host, with its supplementary groups."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UserError(f"no OS account {name!r} on the engine host") from None
    groups = tuple(sorted(set(os.getgrouplist(name, entry.pw_gid)) - {entry.pw_gid}))
    return Account(name=name, uid=entry.pw_uid, gid=entry.pw_gid, groups=groups, home=entry.pw_dir,
                   shell=entry.pw_shell or "/bin/sh")


def current() -> Account:
    """The account the engine itself runs as (single-user mode runs every job as it)."""
    entry = pwd.getpwuid(os.geteuid())
    return lookup(entry.pw_name) if entry.pw_name else Account("", os.geteuid(), os.getegid())


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def job_env(account: Account, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment a job process starts with: the account's basics, a fixed PATH, a locale."""
    env = {"HOME": account.home or "/", "USER": account.name, "LOGNAME": account.name, "PATH": SAFE_PATH,
           "SHELL": account.shell or "/bin/sh", "LANG": "C.UTF-8"}
    env.update(extra or {})
    return env


def as_account(account: Account | None, argv: list[str], extra_env: dict[str, str] | None = None) -> list[str]:
    """argv run as the account with a clean environment. In single-user mode (account None, or the engine's
    own account) the environment is still cleared: a job never inherits an engine variable."""
    me = current() if account is None else account
    env = ["env", "-i", *(f"{k}={v}" for k, v in job_env(me, extra_env).items())]
    if account is None or not multi_user() or account.uid == os.geteuid():
        return [*env, *argv]
    # setpriv, not su/runuser: no PAM session, no login shell, exact ids; --init-groups gives the
    # supplementary groups of the account, and the bounding set drops every capability root had.
    return ["setpriv", f"--reuid={account.uid}", f"--regid={account.gid}", "--init-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--", *env, *argv]
