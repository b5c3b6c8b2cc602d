"""Which OS account a user's jobs run as: creating or mapping it (`e2e admin create-user`), and choosing it
at submit (an API user's mapped account; the engine host's own CLI: E2E_RUN_AS)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.cluster import identity
from orchestrator.model.errors import UserError
from orchestrator.store.users import check_name

if TYPE_CHECKING:
    from orchestrator.control.service import ControlService
    from orchestrator.store.jobs import JobStore


def create_user(store: JobStore, name: str, admin: bool = False, os_user: str | None = None) -> str:
    """A new API user and their first token. A root engine creates their OS account (useradd: home, bash,
    locked password) or, with os_user, maps to an existing one (LDAP/SSSD sites), never root. A single-user
    engine cannot run anyone's jobs as another account, so it refuses and says why."""
    check_name(name)
    if not identity.multi_user():
        raise UserError(f"cannot create user {name!r}: {identity.single_user_notice()}")
    try:
        store.users.get(name)
    except UserError:
        pass
    else:
        raise UserError(f"user {name!r} exists already; `e2e admin token {name}` issues another token, "
                        f"`e2e admin map-user {name} --os-user ACCOUNT` changes their OS account")
    if os_user:
        account = identity.check_job_account(os_user, "--os-user")
    else:
        account = identity.create_os_account(name)
    return store.users.create(name, admin, os_user=account.name)


def map_user(store: JobStore, name: str, os_user: str) -> str:
    """Map an existing API user to an existing OS account (not root)."""
    account = identity.check_job_account(os_user, "--os-user")
    store.users.set_os_user(name, account.name)
    return account.name


def job_account(service: ControlService) -> str:
    """The OS account a job submitted now runs as, stored on the job (`Job.account`) and used by every later
    step. A single-user engine: its own. A root engine: the API user's mapped account, or for the engine
    host's own CLI (no API owner) E2E_RUN_AS; never root."""
    if not identity.multi_user():
        return identity.current().name
    if service.scoped:
        name = service.store.users.get(service.user).os_user
        if not name:
            raise UserError(f"user {service.user!r} has no OS account to run jobs as; an admin maps one: "
                            f"`e2e admin map-user {service.user} --os-user ACCOUNT`")
        return identity.check_job_account(name, f"os_user of user {service.user!r}").name
    if not service.settings.run_as:
        raise UserError("the engine runs no job as root: set E2E_RUN_AS or submit as an API user")
    return identity.check_job_account(service.settings.run_as, "E2E_RUN_AS").name


def mode_notice() -> str | None:
    """The line `e2e up` and `e2e serve` print in single-user mode (an engine not running as root)."""
    return identity.single_user_notice()
