"""JobStore on Redis: jobs, runs, node leases and event streams; the only writer of state."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Iterable

import redis

from orchestrator.model.errors import InvalidState, NotFound
from orchestrator.model.events import Event, EventKind
from orchestrator.model.records import Job, Run
from orchestrator.model.states import JOB_TERMINAL, RUN_ENDED, JobState, RunState, job_sources, run_sources
from orchestrator.store.codec import decode
from orchestrator.store.codec import encode as _encode
from orchestrator.store.scripts import ALLOCATE, RELEASE, REPLACE, SET_ONCE, TRANSITION
from solvers.base import Progress


def _now() -> str:
    return f"{time.time():.6f}"




class JobStore:
    """Every read and write of engine state goes through here."""

    def __init__(self, client: redis.Redis, prefix: str = "e2e", events_maxlen: int = 10_000) -> None:
        self.r = client
        self.prefix = prefix
        self.events_maxlen = events_maxlen
        self._transition = client.register_script(TRANSITION)
        self._allocate = client.register_script(ALLOCATE)
        self._release = client.register_script(RELEASE)
        self._replace = client.register_script(REPLACE)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> JobStore:
        return cls(redis.Redis.from_url(url, decode_responses=True, socket_timeout=30, health_check_interval=25),
                   **kwargs)

    # -- keys (hash tags keep one job's keys in one slot, should this ever run on Redis Cluster)
    def _job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{{{job_id}}}"

    def _run(self, job_id: str, run_id: str) -> str:
        return f"{self._job(job_id)}:run:{run_id}"

    def _events(self, job_id: str) -> str:
        return f"{self._job(job_id)}:events"

    def _revisions(self, job_id: str) -> str:
        return f"{self._job(job_id)}:revisions"

    @property
    def _index(self) -> str:
        return f"{self.prefix}:jobs"

    def _owned(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner}"

    @property
    def _active(self) -> str:
        return f"{self.prefix}:jobs:active"

    @property
    def _queue(self) -> str:
        return f"{self.prefix}:queue"

    def _pool(self, backend: str) -> str:
        return f"{self.prefix}:nodes:{backend}"

    def _drained(self, backend: str) -> str:
        return f"{self.prefix}:nodes:{backend}:drained"

    def _sweep(self, sweep_id: str) -> str:
        return f"{self.prefix}:sweep:{sweep_id}"

    # -- jobs
    def create_job(self, *, name: str, owner: str, spec: dict[str, Any], backend: str, solver: str,
                   extra: dict[str, Any] | None = None) -> str:
        """Store a new QUEUED job with its first run, queue it, and record the creation event; `extra`
        fields (a sweep member's sweep, index and values) are stored on the job too."""
        while True:  # one round trip for both; a seq number skipped on a (rare) id clash only leaves a gap
            job_id = secrets.token_hex(4)
            taken, seq = self.r.pipeline(transaction=False).exists(self._job(job_id)).incr(
                f"{self.prefix}:seq").execute()
            if not taken:
                break
        now = _now()
        run_id = "run-001"
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self._job(job_id), mapping=_encode({
            "id": job_id, "name": name, "owner": owner, "state": JobState.QUEUED, "version": 1,
            "spec": spec, "backend": backend, "solver": solver, "created_at": now, "updated_at": now,
            "runs": 1, "current_run": run_id, "nodes": [], "seq": seq, "revision": 1, **(extra or {}),
        }))
        pipe.hset(self._run(job_id, run_id), mapping=_encode({
            "id": run_id, "job_id": job_id, "state": RunState.PENDING, "version": 1, "created_at": now,
            "updated_at": now, "log_offset": 0, "attempt": 1, "revision": 1,
        }))
        self._xadd(pipe, job_id, EventKind.JOB_CREATED, {"name": name, "owner": owner, "state": "QUEUED"}, now)
        self._xadd(pipe, job_id, EventKind.RUN_CREATED, {"run": run_id, "state": "PENDING"}, now)
        pipe.zadd(self._index, {job_id: float(now)})
        pipe.zadd(self._owned(owner), {job_id: float(now)})
        pipe.sadd(self._active, job_id)
        pipe.zadd(self._queue, {job_id: seq})
        if (extra or {}).get("sweep"):
            pipe.rpush(self._sweep(extra["sweep"]), job_id)
            pipe.zadd(f"{self.prefix}:sweeps", {extra["sweep"]: float(now)}, nx=True)
        pipe.execute()
        return job_id

    def get_job(self, job_id: str) -> Job:
        raw = self.r.hgetall(self._job(job_id))
        if not raw:
            raise NotFound(f"no job {job_id!r}")
        return _decode_job(raw)

    def find_job(self, prefix: str) -> str:
        """The full id of the one job whose id starts with `prefix`."""
        if self.r.exists(self._job(prefix)):
            return prefix
        matches = self.ids_starting(prefix) if prefix else []
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFound(f"no job {prefix!r}")
        raise NotFound(f"{prefix!r} matches {len(matches)} jobs: {', '.join(matches[:5])}; give more of the id")

    def ids_starting(self, prefix: str) -> list[str]:
        return [j for j in self.r.zrange(self._index, 0, -1) if j.startswith(prefix)]

    def owners(self, job_ids: list[str]) -> list[str | None]:
        """Each job's owner (None for a job that does not exist), in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self._job(job_id), "owner")
        return pipe.execute()

    def list_jobs(self, limit: int = 100, owner: str | None = None) -> list[Job]:
        """The newest jobs first; only `owner`'s when given."""
        ids = self.r.zrevrange(self._owned(owner) if owner is not None else self._index, 0, limit - 1)
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self._job(job_id))
        return [_decode_job(raw) for raw in pipe.execute() if raw]

    def active_jobs(self) -> list[str]:
        return sorted(self.r.smembers(self._active))

    def queued_jobs(self) -> list[str]:
        return self.r.zrange(self._queue, 0, -1)

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Set non-state fields (never `state`: that goes through transition_job)."""
        if "state" in fields or "version" in fields:
            raise ValueError("state changes go through transition_job")
        self.r.hset(self._job(job_id), mapping=_encode(fields))

    def transition_job(self, job_id: str, to: JobState, *, expect: Iterable[JobState] | None = None,
                       data: dict[str, Any] | None = None, **fields: Any) -> bool:
        """Atomically move a job to `to` if its state is one of `expect` (default: every allowed source).

        Returns False when the job is not in an expected state (someone else moved it first)."""
        sources = job_sources(to) if expect is None else frozenset(expect) & job_sources(to)
        return self._cas(self._job(job_id), job_id, sources, to, EventKind.JOB_STATE, data, fields,
                         deactivate=to in JOB_TERMINAL)

    # -- runs
    def get_run(self, job_id: str, run_id: str) -> Run:
        raw = self.r.hgetall(self._run(job_id, run_id))
        if not raw:
            raise NotFound(f"job {job_id} has no run {run_id!r}")
        return _decode_run(raw)

    def list_runs(self, job_id: str) -> list[Run]:
        count = int(self.r.hget(self._job(job_id), "runs") or 0)
        pipe = self.r.pipeline(transaction=False)
        for i in range(1, count + 1):
            pipe.hgetall(self._run(job_id, f"run-{i:03d}"))
        return [_decode_run(raw) for raw in pipe.execute() if raw]

    def update_run(self, job_id: str, run_id: str, **fields: Any) -> None:
        if "state" in fields or "version" in fields:
            raise ValueError("state changes go through transition_run")
        self.r.hset(self._run(job_id, run_id), mapping=_encode(fields))

    def set_run_once(self, job_id: str, run_id: str, field: str, value: Any) -> bool:
        """Set a run field only if it is unset; True for the one caller that set it (send-once guards)."""
        return bool(self.r.eval(SET_ONCE, 1, self._run(job_id, run_id), field, _encode({field: value})[field]))

    def transition_run(self, job_id: str, run_id: str, to: RunState, *, expect: Iterable[RunState] | None = None,
                       data: dict[str, Any] | None = None, **fields: Any) -> bool:
        """Atomically move a run to `to`; False when it is not in an expected state."""
        sources = run_sources(to) if expect is None else frozenset(expect) & run_sources(to)
        event = {"run": run_id, **(data or {})}
        return self._cas(self._run(job_id, run_id), job_id, sources, to, EventKind.RUN_STATE, event, fields)

    def add_run(self, job_id: str, after: str, **fields: Any) -> str | None:
        """Create the next run (PENDING) and make it current, if `after` is still the current run and has
        ended; its id, or None when someone changed the job first."""
        job_key = self._job(job_id)
        with self.r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(job_key, self._run(job_id, after))
                current, count = pipe.hmget(job_key, "current_run", "runs")
                state = pipe.hget(self._run(job_id, after), "state")
                if current != after or state not in {s.value for s in RUN_ENDED}:
                    return None
                run_id = f"run-{int(count) + 1:03d}"
                now = _now()
                pipe.multi()
                pipe.hset(self._run(job_id, run_id), mapping=_encode({
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
        job_key = self._job(job_id)
        with self.r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(job_key)
                if int(pipe.hget(job_key, "revision") or 1) != expected:
                    return None
                revision = expected + 1
                now = _now()
                record = {"revision": revision, "at": float(now), **entry}
                pipe.multi()
                pipe.hset(job_key, mapping=_encode({"spec": spec, "revision": revision, "updated_at": now}))
                pipe.rpush(self._revisions(job_id), json.dumps(record, separators=(",", ":"), default=str))
                self._xadd(pipe, job_id, EventKind.CONTROL, {"action": "edit", **record}, now)
                pipe.execute()
                return revision
            except redis.WatchError:
                return None

    def revisions(self, job_id: str) -> list[dict[str, Any]]:
        """Every edit of the job's spec, oldest first (revision 1, the submitted spec, has no entry)."""
        return [json.loads(raw) for raw in self.r.lrange(self._revisions(job_id), 0, -1)]

    def record_progress(self, job_id: str, run_id: str, progress: Progress, log_offset: int) -> None:
        """Store the latest progress and append it to the stream, together."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self._run(job_id, run_id), mapping=_encode({
            "progress": progress.model_dump(), "log_offset": log_offset}))
        self._xadd(pipe, job_id, EventKind.PROGRESS,
                   {"run": run_id, **progress.model_dump(), "fraction": progress.fraction}, _now())
        pipe.execute()

    # -- events
    def events_key(self, job_id: str) -> str:
        """The job's Redis stream, for readers that wait on it themselves (the API's async event streams)."""
        return self._events(job_id)

    def append_event(self, job_id: str, kind: EventKind, data: dict[str, Any]) -> str:
        return self._xadd(self.r, job_id, kind, data, _now())

    def events(self, job_id: str, after: str = "0-0", *, block_ms: int | None = None,
               count: int = 1000) -> list[Event]:
        """Events after `after` (a stream id); with block_ms, wait that long for the first new one."""
        if block_ms is None:
            entries = self.r.xrange(self._events(job_id), min=f"({after}" if after != "0-0" else "-", count=count)
        else:
            reply = self.r.xread({self._events(job_id): after}, count=count, block=block_ms)
            entries = reply[0][1] if reply else []
        return [Event.from_stream(entry_id, fields) for entry_id, fields in entries]

    # -- node leases
    def allocate(self, backend: str, job_id: str, count: int, inventory: list[str]) -> list[str] | str:
        """Lease `count` nodes to the job (the head of the queue only); the node names, or why not."""
        reply = self._allocate(keys=[self._pool(backend), self._queue, self._drained(backend)],
                               args=[job_id, count, *inventory])
        if reply and reply[0].startswith("!"):
            return reply[0][1:]
        return list(reply)

    def release(self, backend: str, job_id: str) -> int:
        """Free every node the job holds and take it off the queue; the number of nodes freed."""
        return int(self._release(keys=[self._pool(backend), self._queue], args=[job_id]))

    def leases(self, backend: str) -> dict[str, str]:
        return self.r.hgetall(self._pool(backend))

    def replace_nodes(self, backend: str, job_id: str, dead: list[str], inventory: list[str],
                      note: dict[str, Any], allow_fewer: bool = False) -> dict[str, str | None] | str:
        """Drain the job's dead nodes and lease a free node in place of each (see REPLACE): {dead: new or
        None (dropped)}, or 'nofree' (nothing changed but the drain) or 'none' (nothing left to replace)."""
        reply = self._replace(keys=[self._pool(backend), self._drained(backend), self._job(job_id)],
                              args=[job_id, json.dumps(note, default=str), "1" if allow_fewer else "",
                                    len(dead), *dead, *inventory])
        if reply and reply[0].startswith("!"):
            return reply[0][1:]
        return {reply[i]: reply[i + 1] or None for i in range(0, len(reply), 2)}

    def drained(self, backend: str) -> dict[str, dict[str, Any]]:
        """Nodes taken out of service after a fault, with why, when and during which job's run."""
        return {name: json.loads(note) for name, note in self.r.hgetall(self._drained(backend)).items()}

    def leftovers(self) -> dict[str, dict[str, Any]]:
        """Jobs terminated without some silent nodes, whose run processes there are still to be killed."""
        return {job_id: json.loads(note) for job_id, note in self.r.hgetall(f"{self.prefix}:leftovers").items()}

    def set_leftovers(self, job_id: str, note: dict[str, Any] | None) -> None:
        if note:
            self.r.hset(f"{self.prefix}:leftovers", job_id, json.dumps(note))
        else:
            self.r.hdel(f"{self.prefix}:leftovers", job_id)

    def drain(self, backend: str, node: str, note: dict[str, Any]) -> bool:
        """Take a node out of service by hand (allocation skips drained nodes); False if drained already."""
        return bool(self.r.hsetnx(self._drained(backend), node, json.dumps(note, default=str)))

    def undrain(self, backend: str, node: str) -> dict[str, Any] | None:
        """Put a drained node back into service; its drain note, or None if it was not drained."""
        note = self.r.hget(self._drained(backend), node)
        if note is None or not self.r.hdel(self._drained(backend), node):
            return None
        return json.loads(note)

    # -- sweeps: member jobs sharing a sweep id (create_job adds each, from its `sweep` field)
    def sweep_members(self, sweep_id: str) -> list[str]:
        return self.r.lrange(self._sweep(sweep_id), 0, -1)

    def sweeps(self, limit: int = 100) -> list[str]:
        """Sweep ids, newest first."""
        return self.r.zrevrange(f"{self.prefix}:sweeps", 0, limit - 1)

    # -- internals
    def _cas(self, key: str, job_id: str, sources: frozenset, to, kind: EventKind,
             data: dict[str, Any] | None, fields: dict[str, Any], deactivate: bool = False) -> bool:
        if not sources:
            raise InvalidState(f"no state may move to {to.value}")
        flat: list[str] = []
        for k, v in _encode(fields).items():
            flat += [k, v]
        event = json.dumps({"state": to.value, **(data or {})}, separators=(",", ":"), default=str)
        status, *rest = self._transition(
            keys=[key, self._events(job_id), self._active],
            args=[",".join(s.value for s in sources), to.value, _now(), kind.value, event, self.events_maxlen,
                  job_id if deactivate else "", *flat],
        )
        if status == -1:
            raise NotFound(f"no such job or run for {job_id!r}")
        return status == 1

    def _xadd(self, client: Any, job_id: str, kind: EventKind, data: dict[str, Any], ts: str) -> Any:
        return client.xadd(self._events(job_id), {
            "kind": kind.value, "ts": ts, "data": json.dumps(data, separators=(",", ":"), default=str),
        }, maxlen=self.events_maxlen, approximate=True)


def _decode_job(raw: dict[str, str]) -> Job:
    return decode(Job, raw)


def _decode_run(raw: dict[str, str]) -> Run:
    return decode(Run, raw)
