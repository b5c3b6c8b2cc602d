"""kill -9 Redis (AOF on, appendfsync everysec as the embedded stack sets it) while jobs are queued, launching,
running and terminating, then start it again on the same data: every job completes once, nothing is lost."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tests.integration.conftest import Engine, make_settings

from .conftest import Tally, sized
from .driver import Lifecycles

pytestmark = [pytest.mark.integration, pytest.mark.timeout(sized(300, 2400))]

JOBS = sized(24, 100)
KILLS = sized(2, 6)
FSYNC_WINDOW = 1.0   # appendfsync everysec: at most the last second of writes may be lost by a kill -9


def test_redis_kill9_and_restart_midrun_loses_nothing(aof_redis, tmp_path):
    settings = make_settings(tmp_path / "home", aof_redis.url, local_nodes=6)
    engine = Engine(settings)
    client = engine.client
    rng = random.Random(seed := random.randrange(1 << 30))
    life = Lifecycles(client, tmp_path / "starts", window=JOBS, seconds=2.0)
    affected: set[str] = set()
    outages: list[float] = []
    try:
        # Given every job submitted (a client call during the outage fails loudly, as it should), and more
        # than the fsync window ago, so each job record is on disk
        jobs = life.submit(JOBS, prefix="aof")
        time.sleep(FSYNC_WINDOW + 0.5)
        before = {job_id: client.store.get_job(job_id).spec for job_id in jobs}
        done = threading.Event()

        def killer() -> None:
            for _ in range(KILLS):
                # within the workload (24 two-second runs on 6 nodes, 10 s or more): CI once saw it end before
                # the second kill when the waits could add up to 15 s
                if done.wait(rng.uniform(1.0, 3.0)):
                    return
                affected.update(life.alive())
                # When Redis is killed -9 in the middle of it all, down a moment, and started on its AOF
                aof_redis.kill()
                down = time.monotonic()
                time.sleep(rng.uniform(0.5, 2.0))
                aof_redis.start()
                outages.append(time.monotonic() - down)

        revived: list[str] = []

        def supervisor() -> None:  # what `e2e up` and compose's `restart:` do for a worker that exits
            while not done.wait(1.0):
                try:
                    revived.extend(engine.stack.revive())
                except Exception:  # noqa: BLE001 - Redis still down: try again next second
                    pass

        threads = [threading.Thread(target=killer, daemon=True), threading.Thread(target=supervisor, daemon=True)]
        for thread in threads:
            thread.start()
        try:
            life.run(JOBS)
        finally:
            done.set()
            for thread in threads:
                thread.join(60)
        # Then no job submitted before the fsync window was lost, and each ran once and completed whole
        lost = [job_id for job_id, spec in before.items() if client.store.get_job(job_id).spec != spec]
        tally = Tally()
        for job_id in lost:
            tally.problem(job_id, f"{job_id}: record lost or changed by the restart")
        tally.check_jobs(client, jobs, life.starts, settings.root)
        tally.settle(affected)
        tally.record("fault: Redis kill -9 (AOF)", f"{len(outages)} kills, {JOBS} jobs: {tally.recovered}/"
                     f"{tally.affected} hit jobs recovered, 0 records lost; "
                     f"{len(revived)} process restarts by the supervisor"
                     if not lost else f"{len(lost)} lost",
                     kills=len(outages), revived=revived, outage_seconds=[round(s, 1) for s in outages], seed=seed)
        assert len(outages) == KILLS
        tally.assert_clean()
    finally:
        engine.close()
