"""Running as a job's owner: account lookup, the privilege-dropping command prefix, the clean job environment."""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

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


def switches(account: Account | None) -> bool:
    """Whether starting a process for this account means changing ids (a root engine, another account)."""
    return account is not None and multi_user() and account.uid != os.geteuid()


def clean_env(account: Account | None, argv: list[str], extra_env: dict[str, str] | None = None,
              default_signals: bool = False) -> list[str]:
    """argv under `env -i` with only the job's environment (no id change); default_signals also resets signals
    the caller ignores (a Celery pool process ignores SIGTERM, and an ignored signal is inherited)."""
    me = current() if account is None else account
    flags = ["-i", "--default-signal"] if default_signals else ["-i"]
    return ["env", *flags, *(f"{k}={v}" for k, v in job_env(me, extra_env).items()), *argv]


def as_account(account: Account | None, argv: list[str], extra_env: dict[str, str] | None = None,
               default_signals: bool = False) -> list[str]:
    """argv run as the account with a clean environment. In single-user mode (account None, or the engine's
    own account) the environment is still cleared: a job never inherits an engine variable."""
    env = clean_env(account, argv, extra_env, default_signals)
    if account is None or not switches(account):
        return env
    # setpriv, not su/runuser: no PAM session, no login shell, exact ids. The supplementary groups are given
    # as numbers (looked up once on the engine host) rather than --init-groups: no NSS lookup at every start,
    # which was most of setpriv's cost. The bounding set drops every capability root had, so not even a
    # set-uid program the job runs gets one back. (subprocess's own user=/group= would save this exec but
    # costs more: Python then forks instead of vforking, ~12 ms for a worker-sized process.)
    groups = f"--groups={','.join(map(str, account.groups))}" if account.groups else "--clear-groups"
    return ["setpriv", f"--reuid={account.uid}", f"--regid={account.gid}", groups,
            "--inh-caps=-all", "--bounding-set=-all", "--", *env]


# -- acting as an account on this thread's file operations
_libc = ctypes.CDLL(None, use_errno=True)
# setgroups(2) by number: the kernel's per-thread call, not glibc's process-wide wrapper.
_SYS_SETGROUPS = {"x86_64": 116, "aarch64": 159, "ppc64le": 81, "s390x": 206, "riscv64": 159}.get(
    os.uname().machine, 116)


def _switch(call, new: int) -> None:
    """setfsuid/setfsgid return the previous id and report no error: ask again (-1 changes nothing) to
    know the switch took."""
    call(new)
    now = call(-1) & 0xFFFFFFFF
    if now != new:
        raise PermissionError(f"{call.__name__}({new}) did not take (the id is {now})")


@contextmanager
def acting_as(account: Account | None) -> Iterator[None]:
    """File operations of the calling THREAD made with the account's filesystem identity: setfsgid then
    setfsuid (per thread in glibc, unlike setuid, so other worker threads stay root), root again after.
    An fsuid other than 0 drops CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_CHOWN... from the effective set: the
    kernel checks every open, mkdir, unlink and symlink walk as the account, so a link a job planted in its
    tree leads nowhere it could not go itself, and what is created is the account's. The thread's supplementary
    groups are the account's meanwhile (the per-thread system call). A subprocess started inside gets
    fsuid = euid (root) again at exec: run those through as_account. No-op for None, in single-user mode
    and for the engine's own account."""
    if account is None or not multi_user() or account.uid == os.geteuid():
        yield
        return
    uid, gid, groups = os.geteuid(), os.getegid(), os.getgroups()
    _set_thread_groups(account.groups)  # first, while fully root (CAP_SETGID stays with any fsuid, though)
    try:
        _switch(_libc.setfsgid, account.gid)
        _switch(_libc.setfsuid, account.uid)
        yield
    finally:
        _switch(_libc.setfsuid, uid)  # uid first: setting the fsgid back needs CAP_SETGID, restored with it
        _switch(_libc.setfsgid, gid)
        _set_thread_groups(tuple(groups))


def _set_thread_groups(groups: tuple[int, ...]) -> None:
    """The supplementary groups of this thread alone: the raw system call (glibc's setgroups() changes every
    thread of the process, as POSIX wants; the kernel's is per thread, like setfsuid). Without it the
    account's file operations would keep root's groups (often just 0, the root group) and miss its own."""
    array = (ctypes.c_uint * max(len(groups), 1))(*groups)
    if _libc.syscall(_SYS_SETGROUPS, ctypes.c_size_t(len(groups)), array) != 0:
        err = ctypes.get_errno()
        raise PermissionError(err, f"setgroups for this thread failed: {os.strerror(err)}")


def filesystem_ids() -> tuple[int, int]:
    """This thread's (fsuid, fsgid), from /proc/thread-self/status."""
    with open("/proc/thread-self/status", "rb") as fh:
        found = {line.split(b":")[0]: line.split()[4] for line in fh if line.startswith((b"Uid:", b"Gid:"))}
    return int(found[b"Uid"]), int(found[b"Gid"])


# -- resolving a job's account (cached: every engine step of a job needs it, a passwd lookup costs ~0.1 ms
# through NSS and far more with LDAP/SSSD behind it)
ACCOUNT_TTL = 60.0
_resolved: dict[str, tuple[float, Account]] = {}


def account_for(name: str) -> Account | None:
    """The account a job's stored `Job.account` names, for the backend calls; None for "" (the engine's own
    account: single-user mode, or a job stored before accounts existed)."""
    if not name:
        return None
    now = time.monotonic()
    hit = _resolved.get(name)
    if hit is not None and now - hit[0] < ACCOUNT_TTL:
        return hit[1]
    account = lookup(name)
    _resolved[name] = (now, account)
    return account


def single_user_notice() -> str | None:
    """The one line `e2e up`/`e2e serve` print when the engine cannot switch accounts; None as root."""
    if multi_user():
        return None
    return f"single-user mode: every job runs as {current().name}; other users need a root engine"


def check_job_account(name: str, field: str) -> Account:
    """An existing account a job may run as: never root (uid 0), named by the field it came from."""
    try:
        account = lookup(name)
    except UserError:
        raise UserError(f"{field}: no OS account {name!r} on the engine host") from None
    if account.uid == 0:
        raise UserError(f"{field}: {name!r} is root (uid 0); the engine runs no job as root")
    return account


def create_os_account(name: str) -> Account:
    """A new local OS account for a user (root only): home directory, bash, its own group, and no password
    (locked: nobody logs in with one; the engine switches to it, and users reach nodes with their SSH keys)."""
    if not multi_user():
        raise UserError(f"cannot create OS account {name!r}: {single_user_notice()}")
    try:
        pwd.getpwnam(name)
    except KeyError:
        pass
    else:
        raise UserError(f"OS account {name!r} exists already: map to it with --os-user {name}")
    proc = subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", "--", name],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise UserError(f"useradd {name} failed: {proc.stderr.strip() or proc.returncode}")
    _resolved.pop(name, None)
    return check_job_account(name, "os_user")
