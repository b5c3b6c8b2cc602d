"""Every Redis key name of every family, in one place (and so every prefix a per-role Redis ACL needs).

Existing data depends on these exact names: change one only with a migration. A job's own keys carry a hash
tag (`{id}`) so they share a slot, should this ever run on Redis Cluster.
"""

from __future__ import annotations

# kombu's Redis transport keeps one list per priority step of a queue, named queue + SEP + step (0: the queue)
CELERY_PRIORITY_SEP, CELERY_PRIORITY_STEPS = "\x06\x16", (0, 3, 6, 9)
CELERY_UNACKED = "unacked"  # kombu's hash of delivered, not yet acknowledged messages


class KeyNames:
    """The key names under one prefix (default `e2e`)."""

    def __init__(self, prefix: str = "e2e") -> None:
        self.prefix = prefix

    # -- jobs, runs, revisions, events
    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{{{job_id}}}"

    def run(self, job_id: str, run_id: str) -> str:
        return f"{self.job(job_id)}:run:{run_id}"

    def events(self, job_id: str) -> str:
        return f"{self.job(job_id)}:events"

    def series_names(self, job_id: str, run_id: str) -> str:
        """The set of a run's series names."""
        return f"{self.run(job_id, run_id)}:series"

    def series(self, job_id: str, run_id: str, name: str) -> str:
        """One series' latest points, oldest first (a capped list of JSON [x, y])."""
        return f"{self.run(job_id, run_id)}:series:{name}"

    def revisions(self, job_id: str) -> str:
        return f"{self.job(job_id)}:revisions"

    @property
    def jobs(self) -> str:
        """Every job id, scored by creation time."""
        return f"{self.prefix}:jobs"

    @property
    def active(self) -> str:
        return f"{self.prefix}:jobs:active"

    @property
    def due(self) -> str:
        """The safety net's schedule: every active job, scored by when a reconcile sweep should look at it."""
        return f"{self.prefix}:jobs:due"

    @property
    def watch_stream(self) -> str:
        """Runs the watchers should watch (appended when a run starts: host, job, run, attempt)."""
        return f"{self.prefix}:jobs:watch"

    def watcher(self, host: str) -> str:
        """A host's watcher heartbeat (expires when the watcher stops)."""
        return f"{self.prefix}:jobs:watcher:{host}"

    def observe_lock(self, job_id: str) -> str:
        return f"{self.prefix}:lock:observe:{job_id}"

    @property
    def seq(self) -> str:
        return f"{self.prefix}:seq"

    def owned(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner}"

    @property
    def queue(self) -> str:
        return f"{self.prefix}:queue"

    # -- nodes: leases, drains, leftovers
    def pool(self, backend: str) -> str:
        return f"{self.prefix}:nodes:{backend}"

    @property
    def pools_pattern(self) -> str:
        """Matches every pool (and every pool's drained hash, which has one more ':' part)."""
        return f"{self.prefix}:nodes:*"

    def pool_backend(self, key: str) -> str | None:
        """The backend a pool key is for; None for a key that is not a pool (a drained hash)."""
        backend = key[len(self.pool("")):]
        return None if ":" in backend else backend

    def drained(self, backend: str) -> str:
        return f"{self.pool(backend)}:drained"

    # the pool's lease indexes (store/scripts.py): free nodes by inventory position, each job's nodes, and each
    # node's position with the inventory's fingerprint
    def pool_free(self, backend: str) -> str:
        return f"{self.pool(backend)}:free"

    def pool_held(self, backend: str) -> str:
        return f"{self.pool(backend)}:held"

    def pool_where(self, backend: str) -> str:
        return f"{self.pool(backend)}:where"

    def inventory(self, backend: str) -> str:
        """The backend's nodes as the engine's workers see them (published for the CLI, API and monitor)."""
        return f"{self.pool(backend)}:inventory"

    @property
    def leftovers(self) -> str:
        return f"{self.prefix}:leftovers"

    # -- sweeps
    def sweep(self, sweep_id: str) -> str:
        return f"{self.prefix}:sweep:{sweep_id}"

    @property
    def sweeps(self) -> str:
        return f"{self.prefix}:sweeps"

    # -- users and tokens
    def account(self, name: str) -> str:
        return f"{self.prefix}:account:{name}"

    def account_name(self, key: str) -> str:
        return key.rsplit(":", 1)[1]

    def token(self, digest: str) -> str:
        return f"{self.prefix}:token:{digest}"

    def account_tokens(self, name: str) -> str:
        return f"{self.prefix}:account-tokens:{name}"

    def job_tokens(self, job_id: str) -> str:
        return f"{self.job(job_id)}:job-tokens"

    # -- ssh keys and access rules, per user
    def ssh_keys(self, user: str) -> str:
        return f"{self.prefix}:user:{user}:ssh-keys"

    def access(self, user: str) -> str:
        return f"{self.prefix}:user:{user}:access"

    # -- notifications: a user's targets and signing secret; the outbox, delivery claims and log (engine-wide)
    def notify_targets(self, user: str) -> str:
        return f"{self.prefix}:user:{user}:notify"

    def notify_secret(self, user: str) -> str:
        return f"{self.prefix}:user:{user}:notify-secret"

    @property
    def notify_users(self) -> str:
        return f"{self.prefix}:notify:users"

    @property
    def notify_outbox(self) -> str:
        return f"{self.prefix}:notify:outbox"

    def notify_claim(self, delivery: str) -> str:
        return f"{self.prefix}:notify:claim:{delivery}"

    @property
    def notify_log(self) -> str:
        return f"{self.prefix}:notify:log"

    # -- desktop secrets (apart from the job hash, so no listing carries them)
    def desktop_secret(self, job_id: str) -> str:
        return f"{self.job(job_id)}:desktop-secret"

    def desktop_pass(self, job_id: str, kind: str, digest: str) -> str:
        """A one-time link code or a browser's desktop cookie (by its sha256), expiring on its own."""
        return f"{self.job(job_id)}:desktop-{kind}:{digest}"

    # -- audit
    @property
    def audit(self) -> str:
        return f"{self.prefix}:audit"

    # -- metrics: Celery task outcomes, control latency
    @property
    def task_totals(self) -> str:
        return f"{self.prefix}:celery:tasks"

    def task_minute(self, minute: int) -> str:
        return f"{self.prefix}:celery:minute:{minute}"

    @property
    def control_cursor(self) -> str:
        return f"{self.prefix}:metrics:control-cursor"

    @property
    def control_latency(self) -> str:
        return f"{self.prefix}:metrics:control-latency"

    @property
    def control_fold_lock(self) -> str:
        return f"{self.prefix}:metrics:fold-lock"

    # -- locks and cursors
    @property
    def reconcile_lock(self) -> str:
        return f"{self.prefix}:lock:reconcile"

    def desktop_lock(self, job_id: str) -> str:
        return f"{self.prefix}:lock:desktop:{job_id}"

    def sync_forward_lock(self, job_id: str) -> str:
        return f"{self.prefix}:sync:{{{job_id}}}:lock"

    def sync_forward_offset(self, job_id: str) -> str:
        return f"{self.prefix}:sync:{{{job_id}}}:offset"

    # -- Celery's own keys (kombu's, not under our prefix)
    @staticmethod
    def celery_queue(queue: str, step: int = 0) -> str:
        return queue if step == 0 else f"{queue}{CELERY_PRIORITY_SEP}{step}"
