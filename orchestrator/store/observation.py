"""What drives observation: the safety net's schedule of due jobs, the runs the host watchers follow, their
leases, and the one-observer-at-a-time lease of each job.

The schedule is a sorted set of every active job scored by when a sweep should look at it next. A sweep claims
a slice of the due jobs atomically (each claimed job is pushed a lease ahead, so a worker that dies mid-slice
only delays them), observes them, and writes each job's next look. Any number of workers sweep at once with
no double work and no singleton lease: the claim is the only coordination.
"""

from __future__ import annotations

import time
from typing import Any

from orchestrator.store.keys import KeyNames
from orchestrator.store.locks import Lease

# Claim up to ARGV[2] jobs due by ARGV[1]: each still-active one is pushed to ARGV[3] (the claim's lease) and
# returned; one no longer active leaves the schedule.
CLAIM_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  if redis.call('SISMEMBER', KEYS[2], id) == 1 then
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    out[#out + 1] = id
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

# The host's watcher lease: taken when free, renewed by its holder (ARGV[1]) only.
HOLD = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

WATCH_STREAM_MAXLEN = 100_000


class Observation:
    """The store's observation family (`store.observation`)."""

    def __init__(self, client: Any, keys: KeyNames) -> None:
        self._r = client
        self._keys = keys
        self._claim = client.register_script(CLAIM_DUE)
        self._hold = client.register_script(HOLD)

    # -- the safety net's schedule
    def claim_due(self, limit: int, lease: float, now: float | None = None) -> list[str]:
        """Up to `limit` jobs due now, oldest due first, each claimed for `lease` seconds."""
        now = time.time() if now is None else now
        return list(self._claim(keys=[self._keys.due, self._keys.active], args=[now, limit, now + lease]))

    def schedule(self, looks: dict[str, float]) -> None:
        """Each job's next look (epoch seconds); a job that has left the schedule is not put back."""
        if looks:
            self._r.zadd(self._keys.due, looks, xx=True)

    def bring_forward(self, job_id: str, at: float) -> None:
        """Make a scheduled job due by `at` at the latest (never later than it already is)."""
        self._r.zadd(self._keys.due, {job_id: at}, xx=True, lt=True)

    def adopt_missing(self) -> int:
        """Put every active job the schedule lacks on it, due now (jobs stored before the schedule existed,
        or a schedule lost with Redis); cheap when nothing is missing. How many were added."""
        due, active = self._r.pipeline(transaction=False).zcard(self._keys.due).scard(self._keys.active).execute()
        if due >= active:
            return 0
        ids = self._r.smembers(self._keys.active)
        return int(self._r.zadd(self._keys.due, {job_id: 0.0 for job_id in ids}, nx=True)) if ids else 0

    def lag(self, now: float | None = None) -> tuple[int, float]:
        """How many jobs are overdue, and by how long the oldest is (0 when none): the safety net's backlog."""
        now = time.time() if now is None else now
        count = int(self._r.zcount(self._keys.due, "-inf", now))
        oldest = self._r.zrange(self._keys.due, 0, 0, withscores=True)
        return count, max(0.0, now - oldest[0][1]) if count and oldest else 0.0

    # -- the runs the host watchers follow
    def announce(self, host: str, job_id: str, run_id: str, attempt: int, pid: int, root: str) -> None:
        """A run started on `host`: its watcher follows its folder and its wrapper process from now on."""
        self._r.xadd(self._keys.watch_stream, {"host": host, "job": job_id, "run": run_id, "attempt": attempt,
                                               "pid": pid, "root": root},
                     maxlen=WATCH_STREAM_MAXLEN, approximate=True)

    def announcements(self, after: str, count: int = 1000) -> list[tuple[str, dict[str, str]]]:
        """Announcements after stream id `after` ("$"-like cursors come from `newest_announcement`)."""
        reply = self._r.xread({self._keys.watch_stream: after}, count=count)
        return [(entry_id, fields) for entry_id, fields in reply[0][1]] if reply else []

    def newest_announcement(self) -> str:
        newest = self._r.xrevrange(self._keys.watch_stream, count=1)
        return newest[0][0] if newest else "0-0"

    def hold_watcher(self, host: str, holder: str, seconds: float) -> bool:
        """Take or renew the host's watcher lease for `holder`; False while another watcher holds it."""
        return bool(self._hold(keys=[self._keys.watcher(host)], args=[holder, int(seconds * 1000)]))

    def watcher_alive(self, host: str) -> bool:
        return bool(self._r.exists(self._keys.watcher(host)))

    def drop_watcher(self, host: str, holder: str) -> None:
        if self._r.get(self._keys.watcher(host)) == holder:
            self._r.delete(self._keys.watcher(host))

    # -- one observer of a job at a time
    def lease(self, job_id: str, seconds: float) -> Lease:
        """Held while a job is observed, so two workers never parse the same log bytes twice."""
        return Lease(self._r.lock(self._keys.observe_lock(job_id), timeout=seconds, blocking=False))
