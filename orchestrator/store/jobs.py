"""JobStore on Redis: jobs, runs, revisions and event streams, and the façade of every other key family
(nodes and sweeps as its own methods; users, access, secrets, audit, metrics and locks as family objects)."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Iterable

import redis

from orchestrator.model.access import parse_address
from orchestrator.model.errors import InvalidState, NotFound
from orchestrator.model.events import Event, EventKind
from orchestrator.model.notify import notification_event
from orchestrator.model.records import Job, Run
from orchestrator.model.states import JOB_TERMINAL, RUN_ENDED, JobState, RunState, job_sources, run_sources
from orchestrator.store.access import AccessRules, SshKeys
from orchestrator.store.audit import Audit
from orchestrator.store.codec import decode
from orchestrator.store.codec import encode as _encode
from orchestrator.store.events_async import AsyncEvents
from orchestrator.store.keys import KeyNames
from orchestrator.store.locks import Locks
from orchestrator.store.metrics import Metrics
from orchestrator.store.nodes import NodeLeases
from orchestrator.store.notify import OUTBOX_MAXLEN, Notifications
from orchestrator.store.observation import Observation
from orchestrator.store.scripts import (
    ALLOCATE,
    CREATE,
    RELEASE,
    REPLACE,
    SET_IF_CHANGED,
    SET_ONCE,
    SYNC_POOL,
    TRANSITION,
)
from orchestrator.store.secrets import DesktopPasses, DesktopSecrets
from orchestrator.store.series import SeriesPoints
from orchestrator.store.sweeps import Sweeps
from orchestrator.store.users import Users
from solvers.base import Progress

# What a failing Redis raises (unreachable, timed out, refused...), for callers that report it as such.
StoreError = redis.RedisError


def _now() -> str:
    return f"{time.time():.6f}"


class JobStore(NodeLeases, Sweeps, SeriesPoints):
    """Every read and write of engine state goes through here; the connection is private to the store."""

    def __init__(self, client: redis.Redis, prefix: str = "e2e", events_maxlen: int = 10_000) -> None:
        self._r = client
        self._keys = keys = KeyNames(prefix)
        self.prefix = prefix
        self.events_maxlen = events_maxlen
        self._transition = client.register_script(TRANSITION)
        self._allocate = client.register_script(ALLOCATE)
        self._release = client.register_script(RELEASE)
        self._replace = client.register_script(REPLACE)
        self._sync_pool = client.register_script(SYNC_POOL)
        self._set_if_changed = client.register_script(SET_IF_CHANGED)
        self._create = client.register_script(CREATE)
        # the other key families, on the same connection
        self.users = Users(client, keys)
        self.ssh_keys = SshKeys(client, keys)
        self.access = AccessRules(client, keys)
        self.secrets = DesktopSecrets(client, keys)
        self.desktop_passes = DesktopPasses(client, keys)
        self.audit = Audit(client, keys)
        self.metrics = Metrics(client, keys)
        self.locks = Locks(client, keys)
        self.observation = Observation(client, keys)
        self.notify = Notifications(client, keys)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> JobStore:
        return cls(redis.Redis.from_url(url, decode_responses=True, socket_timeout=30, health_check_interval=25),
                   **kwargs)

    # -- the connection itself
    def ping(self) -> bool:
        """Whether Redis answers (raises StoreError when it cannot be reached)."""
        return bool(self._r.ping())

    def client_address(self) -> str | None:
        """The address Redis sees this process connect from (CLIENT INFO): a user's 'My current IP'."""
        try:
            info = self._r.client_info()
        except Exception:  # noqa: BLE001 - an old or emulated Redis without CLIENT INFO: the address is unknown
            return None
        addr = info.get("addr") if isinstance(info, dict) else None
        if not addr or ":" not in addr:
            return None
        try:
            return str(parse_address(addr.rsplit(":", 1)[0]))
        except ValueError:
            return None

    # -- jobs
    def create_job(self, *, name: str, owner: str, spec: dict[str, Any], backend: str, solver: str,
                   extra: dict[str, Any] | None = None) -> str:
        """Store a new QUEUED job with its first run, queue it, and record the creation event; `extra`
        fields (a sweep member's sweep, index and values) are stored on the job too."""
        return self.create_queued(name=name, owner=owner, spec=spec, backend=backend, solver=solver, extra=extra)[0]

    def create_queued(self, *, name: str, owner: str, spec: dict[str, Any], backend: str, solver: str,
                      extra: dict[str, Any] | None = None) -> tuple[str, bool]:
        """create_job in one round trip (store/scripts.py CREATE); the job's id, and whether it heads the queue."""
        now = _now()
        run_id = "run-001"
        job_fields = _encode({
            "name": name, "owner": owner, "state": JobState.QUEUED, "version": 1,
            "spec": spec, "backend": backend, "solver": solver, "created_at": now, "updated_at": now,
            "runs": 1, "current_run": run_id, "nodes": [], "revision": 1, **(extra or {}),
        })
        run_fields = _encode({"id": run_id, "state": RunState.PENDING, "version": 1, "created_at": now,
                              "updated_at": now, "log_offset": 0, "attempt": 1, "revision": 1})
        sweep = (extra or {}).get("sweep") or ""
        created = json.dumps({"name": name, "owner": owner, "state": "QUEUED"}, separators=(",", ":"))
        run_created = json.dumps({"run": run_id, "state": "PENDING"}, separators=(",", ":"))
        while True:   # a random id; one already taken (rare) is drawn again
            job_id = secrets.token_hex(4)
            keys = [self._keys.job(job_id), self._keys.run(job_id, run_id), self._keys.events(job_id),
                    self._keys.jobs, self._keys.owned(owner), self._keys.active, self._keys.due, self._keys.queue,
                    self._keys.seq]
            if sweep:
                keys += [self._keys.sweep(sweep), self._keys.sweeps]
            args = [now, self.events_maxlen, job_id, EventKind.JOB_CREATED.value, created,
                    EventKind.RUN_CREATED.value, run_created, sweep,
                    len(job_fields) + 1, "id", job_id, *_pairs(job_fields),
                    len(run_fields) + 1, "job_id", job_id, *_pairs(run_fields)]
            reply = self._create(keys=keys, args=args)
            if reply[0]:
                return job_id, reply[2] == job_id

    def get_job(self, job_id: str) -> Job:
        raw = self._r.hgetall(self._keys.job(job_id))
        if not raw:
            raise NotFound(f"no job {job_id!r}")
        return _decode_job(raw)

    def find_job(self, prefix: str) -> str:
        """The full id of the one job whose id starts with `prefix`."""
        if self._r.exists(self._keys.job(prefix)):
            return prefix
        matches = self.ids_starting(prefix) if prefix else []
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFound(f"no job {prefix!r}")
        raise NotFound(f"{prefix!r} matches {len(matches)} jobs: {', '.join(matches[:5])}; give more of the id")

    def ids_starting(self, prefix: str) -> list[str]:
        return [j for j in self._r.zrange(self._keys.jobs, 0, -1) if j.startswith(prefix)]

    def owners(self, job_ids: list[str]) -> list[str | None]:
        """Each job's owner (None for a job that does not exist), in one round trip."""
        pipe = self._r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self._keys.job(job_id), "owner")
        return pipe.execute()

    def list_jobs(self, limit: int = 100, owner: str | None = None) -> list[Job]:
        """The newest jobs first; only `owner`'s when given."""
        ids = self._r.zrevrange(self._keys.owned(owner) if owner is not None else self._keys.jobs, 0, limit - 1)
        pipe = self._r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self._keys.job(job_id))
        return [_decode_job(raw) for raw in pipe.execute() if raw]

    def active_jobs(self) -> list[str]:
        return sorted(self._r.smembers(self._keys.active))

    def active_count(self) -> int:
        return int(self._r.scard(self._keys.active))

    def states(self, job_id: str, run_id: str) -> tuple[JobState | None, RunState | None]:
        """A job's state and one of its runs' (None for a missing one), in one round trip."""
        job, run = self._r.pipeline(transaction=False).hget(self._keys.job(job_id), "state").hget(
            self._keys.run(job_id, run_id), "state").execute()
        return (JobState(job) if job else None), (RunState(run) if run else None)

    def queued_jobs(self) -> list[str]:
        return self._r.zrange(self._keys.queue, 0, -1)

    def queue_head(self) -> str | None:
        """The first job of the queue (the only one that may take nodes), without reading the whole queue."""
        head = self._r.zrange(self._keys.queue, 0, 0)
        return head[0] if head else None

    def queued_among(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs are queued, in one round trip however long the queue is."""
        if not job_ids:
            return set()
        scores = self._r.zmscore(self._keys.queue, job_ids)
        return {job_id for job_id, score in zip(job_ids, scores, strict=True) if score is not None}

    def queue_length(self) -> int:
        return int(self._r.zcard(self._keys.queue))

    def count_jobs(self) -> int:
        """How many jobs the store holds (terminated ones included)."""
        return int(self._r.zcard(self._keys.jobs))

    def job_states(self, job_ids: list[str]) -> list[str | None]:
        """Each job's state (None for a job that does not exist), in one round trip."""
        pipe = self._r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self._keys.job(job_id), "state")
        return pipe.execute()

    def run_states(self, job_ids: list[str], run_id: str) -> list[str | None]:
        """Each job's run `run_id`'s state (None for a missing run), in one round trip."""
        pipe = self._r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self._keys.run(job_id, run_id), "state")
        return pipe.execute()

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Set non-state fields (never `state`: that goes through transition_job)."""
        if "state" in fields or "version" in fields:
            raise ValueError("state changes go through transition_job")
        self._r.hset(self._keys.job(job_id), mapping=_encode(fields))

    def change_job_field(self, job_id: str, field: str, value: Any) -> bool:
        """Set one non-state field if it holds something else; True for the one caller that changed it (a
        fact several workers notice at once is then reported once)."""
        if field in ("state", "version"):
            raise ValueError("state changes go through transition_job")
        return bool(self._set_if_changed(keys=[self._keys.job(job_id)], args=[field, _encode({field: value})[field]]))

    def transition_job(self, job_id: str, to: JobState, *, expect: Iterable[JobState] | None = None,
                       data: dict[str, Any] | None = None, **fields: Any) -> bool:
        """Atomically move a job to `to` if its state is one of `expect` (default: every allowed source).

        Returns False when the job is not in an expected state (someone else moved it first)."""
        sources = job_sources(to) if expect is None else frozenset(expect) & job_sources(to)
        return self._cas(self._keys.job(job_id), job_id, sources, to, EventKind.JOB_STATE, data, fields,
                         deactivate=to in JOB_TERMINAL)

    # -- runs
    def get_run(self, job_id: str, run_id: str) -> Run:
        raw = self._r.hgetall(self._keys.run(job_id, run_id))
        if not raw:
            raise NotFound(f"job {job_id} has no run {run_id!r}")
        return _decode_run(raw)

    def list_runs(self, job_id: str) -> list[Run]:
        count = int(self._r.hget(self._keys.job(job_id), "runs") or 0)
        pipe = self._r.pipeline(transaction=False)
        for i in range(1, count + 1):
            pipe.hgetall(self._keys.run(job_id, f"run-{i:03d}"))
        return [_decode_run(raw) for raw in pipe.execute() if raw]

    def update_run(self, job_id: str, run_id: str, **fields: Any) -> None:
        if "state" in fields or "version" in fields:
            raise ValueError("state changes go through transition_run")
        self._r.hset(self._keys.run(job_id, run_id), mapping=_encode(fields))

    def set_run_once(self, job_id: str, run_id: str, field: str, value: Any) -> bool:
        """Set a run field only if it is unset; True for the one caller that set it (send-once guards)."""
        return bool(self._r.eval(SET_ONCE, 1, self._keys.run(job_id, run_id), field, _encode({field: value})[field]))

    def transition_run(self, job_id: str, run_id: str, to: RunState, *, expect: Iterable[RunState] | None = None,
                       data: dict[str, Any] | None = None, **fields: Any) -> bool:
        """Atomically move a run to `to`; False when it is not in an expected state."""
        sources = run_sources(to) if expect is None else frozenset(expect) & run_sources(to)
        event = {"run": run_id, **(data or {})}
        return self._cas(self._keys.run(job_id, run_id), job_id, sources, to, EventKind.RUN_STATE, event, fields)

    def add_run(self, job_id: str, after: str, **fields: Any) -> str | None:
        """Create the next run (PENDING) and make it current, if `after` is still the current run and has
        ended; its id, or None when someone changed the job first."""
        job_key = self._keys.job(job_id)
        with self._r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(job_key, self._keys.run(job_id, after))
                current, count = pipe.hmget(job_key, "current_run", "runs")
                state = pipe.hget(self._keys.run(job_id, after), "state")
                if current != after or state not in {s.value for s in RUN_ENDED}:
                    return None
                run_id = f"run-{int(count) + 1:03d}"
                now = _now()
                pipe.multi()
                pipe.hset(self._keys.run(job_id, run_id), mapping=_encode({
                    "id": run_id, "job_id": job_id, "state": RunState.PENDING, "version": 1, "created_at": now,
                    "updated_at": now, "log_offset": 0, "attempt": 1, **fields}))
                pipe.hset(job_key, mapping={"current_run": run_id, "runs": int(count) + 1})
                self._xadd(pipe, job_id, EventKind.RUN_CREATED, {"run": run_id, "state": "PENDING", **fields}, now)
                pipe.execute()
                return run_id
            except redis.WatchError:
                return None

    def add_revision(self, job_id: str, expected: int, spec: dict[str, Any], entry: dict[str, Any]) -> int | None:
        """Store a new spec revision if the job is still at revision `expected`; the new number, or None."""
        job_key = self._keys.job(job_id)
        with self._r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(job_key)
                if int(pipe.hget(job_key, "revision") or 1) != expected:
                    return None
                revision = expected + 1
                now = _now()
                record = {"revision": revision, "at": float(now), **entry}
                pipe.multi()
                pipe.hset(job_key, mapping=_encode({"spec": spec, "revision": revision, "updated_at": now}))
                pipe.rpush(self._keys.revisions(job_id), json.dumps(record, separators=(",", ":"), default=str))
                self._xadd(pipe, job_id, EventKind.CONTROL, {"action": "edit", **record}, now)
                pipe.execute()
                return revision
            except redis.WatchError:
                return None

    def revisions(self, job_id: str) -> list[dict[str, Any]]:
        """Every edit of the job's spec, oldest first (revision 1, the submitted spec, has no entry)."""
        return [json.loads(raw) for raw in self._r.lrange(self._keys.revisions(job_id), 0, -1)]

    def record_progress(self, job_id: str, run_id: str, progress: Progress, log_offset: int) -> None:
        """Store the latest progress and append it to the stream, together."""
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(self._keys.run(job_id, run_id), mapping=_encode({
            "progress": progress.model_dump(), "log_offset": log_offset, "progress_at": time.time()}))
        self._xadd(pipe, job_id, EventKind.PROGRESS,
                   {"run": run_id, **progress.model_dump(), "fraction": progress.fraction}, _now())
        pipe.execute()

    # -- events
    def async_events(self, url: str, socket_timeout: float = 30.0) -> AsyncEvents:
        """A reader that waits on job event streams from asyncio, on its own connection to `url` (this
        store's Redis); the caller closes it."""
        return AsyncEvents(url, self._keys, socket_timeout)

    def latest_event(self, job_id: str, kind: EventKind, lookback: int) -> Event | None:
        """The newest event of `kind` among the job's last `lookback` events."""
        for entry_id, fields in self._r.xrevrange(self._keys.events(job_id), count=lookback):
            if fields.get("kind") == kind.value:
                return Event.from_stream(entry_id, fields)
        return None

    def append_event(self, job_id: str, kind: EventKind, data: dict[str, Any]) -> str:
        return self._xadd(self._r, job_id, kind, data, _now())

    def events(self, job_id: str, after: str = "0-0", *, block_ms: int | None = None,
               count: int = 1000) -> list[Event]:
        """Events after `after` (a stream id); with block_ms, wait that long for the first new one."""
        if block_ms is None:
            entries = self._r.xrange(self._keys.events(job_id), min=f"({after}" if after != "0-0" else "-", count=count)
        else:
            reply = self._r.xread({self._keys.events(job_id): after}, count=count, block=block_ms)
            entries = reply[0][1] if reply else []
        return [Event.from_stream(entry_id, fields) for entry_id, fields in entries]

    # -- internals
    def _cas(self, key: str, job_id: str, sources: frozenset, to, kind: EventKind,
             data: dict[str, Any] | None, fields: dict[str, Any], deactivate: bool = False) -> bool:
        if not sources:
            raise InvalidState(f"no state may move to {to.value}")
        flat: list[str] = []
        for k, v in _encode(fields).items():
            flat += [k, v]
        payload = {"state": to.value, **(data or {})}
        event = json.dumps(payload, separators=(",", ":"), default=str)
        keys = [key, self._keys.events(job_id), self._keys.active]
        if notification_event(kind.value, payload):  # mirrored into the outbox in the same atomic step
            keys.append(self._keys.notify_outbox)
        status, *rest = self._transition(
            keys=keys,
            args=[",".join(s.value for s in sources), to.value, _now(), kind.value, event, self.events_maxlen,
                  job_id if deactivate else "", job_id, *flat],
        )
        if status == -1:
            raise NotFound(f"no such job or run for {job_id!r}")
        return status == 1

    def _xadd(self, client: Any, job_id: str, kind: EventKind, data: dict[str, Any], ts: str) -> Any:
        fields = {"kind": kind.value, "ts": ts, "data": json.dumps(data, separators=(",", ":"), default=str)}
        if not notification_event(kind.value, data):
            return client.xadd(self._keys.events(job_id), fields, maxlen=self.events_maxlen, approximate=True)
        # a notifiable event: mirrored into the outbox in the same transaction (one round trip more, at most)
        pipe = self._r.pipeline(transaction=True) if client is self._r else client
        pipe.xadd(self._keys.events(job_id), fields, maxlen=self.events_maxlen, approximate=True)
        pipe.xadd(self._keys.notify_outbox, {"job": job_id, "event": "", **fields}, maxlen=OUTBOX_MAXLEN,
                  approximate=True)
        return pipe.execute()[0] if client is self._r else pipe


def _pairs(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


def _decode_job(raw: dict[str, str]) -> Job:
    return decode(Job, raw)


def _decode_run(raw: dict[str, str]) -> Run:
    return decode(Run, raw)
