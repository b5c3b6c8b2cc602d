"""Redis ACL users, one per engine role, each granted only the commands and key families that role uses.

Roles (`ROLES`):
- `api`: the REST API and the `e2e` CLI on the engine host (the control surface): jobs, runs, events, users and
  tokens, keys and access rules, desktop secrets (shown to their owner), sweeps, nodes (listing, drains), audit,
  metrics; Celery publishing (task queues, `_kombu.binding.*`) and `celery inspect` (pidbox channel and reply
  queues, and so `unacked*`: every kombu consumer restores overdue messages).
- `worker`: the Celery workers (engine, desktop, sync): everything of the engine's families except users and
  tokens (`account:*`, `token:*`, `account-tokens:*`: a worker never authenticates anyone, so a worker's
  credential cannot make anyone admin); Celery consuming (queues, `unacked*`, bindings, pidbox).
- `beat`: the reconcile beat: publishes one task, so only the reconcile queue and its binding, no engine key.
- `health`: PING and nothing else (a container health check).
- `default`: the admin (every command, every key), password only, never used by an engine process; a
  connection that presents no credential is this user and is refused.

The per-job desktop gateway holds no Redis connection at all (it reads its token from its own session
file), so it has no user. Rules are applied left to right, so each line starts from nothing (`reset`).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import quote

from orchestrator.store.keys import CELERY_UNACKED, KeyNames

ADMIN = "default"
ROLES = ("api", "worker", "beat", "health")

# Commands of the data roles: reads, writes, scripts, transactions, blocking pops, pub/sub; never a dangerous
# one (FLUSHALL, FLUSHDB, CONFIG, KEYS, DEBUG, SHUTDOWN, ACL, MONITOR, MIGRATE, ...) nor a function library.
_DATA_COMMANDS = ("-@all", "+@read", "+@write", "+@scripting", "+@transaction", "+@connection", "+@blocking",
                  "+time", "-@dangerous", "-function", "-script|flush")  # TIME: kombu's scripts read the clock
_PUBSUB = ("+@pubsub",)


@dataclass(frozen=True)
class Grant:
    """What one role may do: commands (ACL rules), keys read and written, keys only read, pub/sub channels."""

    commands: tuple[str, ...]
    keys: tuple[str, ...] = ()
    read_keys: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()

    def rules(self) -> list[str]:
        return [*self.commands, *(f"~{k}" for k in self.keys), *(f"%R~{k}" for k in self.read_keys),
                *(f"&{c}" for c in self.channels)]


def _celery(queues: tuple[str, ...]) -> tuple[str, ...]:
    """A queue's lists (the queue and its priority steps: queue + SEP + step) and its binding set."""
    return tuple(k for q in queues for k in (f"{q}*", f"_kombu.binding*.{q}"))


# kombu's pidbox (`celery inspect`): the broadcast channel (`/<db>.celery.pidbox`); each worker's own queue
# (`<node>.celery.pidbox`), the clients' reply queues (`<uuid>.reply.celery.pidbox`) and both bindings
# Any kombu consumer (the API's too: `celery inspect` consumes its replies) restores unacked messages whose
# visibility timeout passed, under `unacked_mutex`: the hash, its index and the mutex, read and written
_UNACKED = (f"{CELERY_UNACKED}*",)
# kombu PSUBSCRIBEs to the channel, and Redis matches a subscribed pattern literally: one per database
_PIDBOX_CHANNELS = tuple(f"/{db}.celery.pidbox" for db in range(16))
# (kombu expires the reply queues' bindings: their deadlines are one shared sorted set)
_PIDBOX_KEYS = ("*.celery.pidbox*", "_kombu.binding_deadlines")


def role_grants(keys: KeyNames, queues: tuple[str, ...], reconcile_queue: str) -> dict[str, Grant]:
    """Each role's grant, for the engine's key prefix and Celery queues (`queues` includes the reconcile one)."""
    p = keys.prefix
    jobs = (f"{p}:job:*", keys.jobs, f"{keys.jobs}:*", keys.seq, keys.owned("*"), keys.queue,
            keys.sweep("*"), keys.sweeps, keys.pools_pattern)
    users = (keys.account("*"), keys.token("*"), keys.account_tokens("*"))
    per_user = (f"{p}:user:*",)  # ssh keys, access rules, notification targets and secrets
    notify = (f"{p}:notify:*",)  # the notification outbox (fed by every event writer), claims, delivery log
    metrics = (f"{p}:celery:*", f"{p}:metrics:*", keys.audit)
    engine_only = (keys.leftovers, f"{p}:lock:*", f"{p}:sync:*")
    return {
        "api": Grant(_DATA_COMMANDS + _PUBSUB,
                     keys=(*jobs, *users, *per_user, *notify, *metrics, *_celery(queues), *_UNACKED, *_PIDBOX_KEYS),
                     channels=_PIDBOX_CHANNELS),
        "worker": Grant(_DATA_COMMANDS + _PUBSUB,
                        keys=(*jobs, *per_user, *notify, *metrics, *engine_only, *_celery(queues), *_UNACKED,
                              *_PIDBOX_KEYS),
                        channels=_PIDBOX_CHANNELS),
        "beat": Grant(("-@all", "+@connection", "+@transaction", "+lpush", "+llen", "+sadd", "+smembers",
                       "-@dangerous"),
                      keys=_celery((reconcile_queue,))),
        "health": Grant(("-@all", "+ping")),
    }


def new_passwords() -> dict[str, str]:
    """A fresh random password for the admin and every role."""
    return {name: secrets.token_urlsafe(32) for name in (ADMIN, *ROLES)}


def acl_file(grants: dict[str, Grant], passwords: dict[str, str]) -> str:
    """The ACL file (Redis `aclfile` format). Passwords are stored as SHA-256 hashes (`#hex`), so the file
    itself reveals none; the clear passwords live only in the role URLs."""
    lines = [f"user {ADMIN} on #{_sha(passwords[ADMIN])} ~* &* +@all"]
    for role, grant in grants.items():
        lines.append(" ".join(["user", role, "reset", "on", f"#{_sha(passwords[role])}", *grant.rules()]))
    return "\n".join(lines) + "\n"


def role_urls(passwords: dict[str, str], host: str, port: int, db: int = 0) -> dict[str, str]:
    """Each role's URL, the admin's under "admin" (its Redis user is `default`)."""
    return {("admin" if name == ADMIN else name): role_url(name, password, host, port, db)
            for name, password in passwords.items()}


def role_url(user: str, password: str, host: str, port: int, db: int = 0) -> str:
    """A redis:// URL logging in as `user` (redis-py sends AUTH user password)."""
    return f"redis://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{db}"


def _sha(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()
