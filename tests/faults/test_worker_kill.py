"""kill -9 the Celery worker at random moments while many jobs go through their lives: every job still runs its
solver exactly once, completes, and its output reaches the results store; nothing is left running."""

from __future__ import annotations

import random
import threading
import time

import pytest
import redis

from tests.integration.conftest import Engine, make_settings, wait_for

from .conftest import Tally, sized
from .driver import Lifecycles

pytestmark = [pytest.mark.integration, pytest.mark.timeout(sized(300, 2400))]

JOBS = sized(16, 200)
WINDOW = 8           # one job per virtual node
KILL_GAP = (0.5, 3.0)  # seconds between kills, uniform: lands anywhere in provision, launch, observe, terminate


def test_worker_kill9_at_random_points_of_job_lifecycles(redis_url, tmp_path):
    url = f"{redis_url}/1"
    redis.Redis.from_url(url).flushdb()
    settings = make_settings(tmp_path / "home", url, visibility_timeout=8)  # redelivery happens within the test
    engine = Engine(settings)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    life = Lifecycles(engine.client, tmp_path / "starts", WINDOW)
    affected: set[str] = set()
    kills: list[float] = []
    done = threading.Event()
    errors: list[BaseException] = []

    worker_log = settings.root / "logs" / "worker.log"

    def readies() -> int:
        return worker_log.read_text().count(" ready.") if worker_log.exists() else 0

    def killer() -> None:
        try:
            kill_until_done()
        except BaseException as exc:  # noqa: BLE001 - reported by the test, not lost in a thread
            errors.append(exc)

    def kill_until_done() -> None:
        while not done.wait(rng.uniform(*KILL_GAP)):
            affected.update(life.alive())
            engine.stack.kill_worker()
            kills.append(time.monotonic())
            done.wait(rng.uniform(0, 0.5))  # down a moment: tasks queue up meanwhile
            before = readies()
            engine.stack.start_worker()
            # The next gap counts from when the new worker takes tasks: on a loaded machine its start-up can
            # outlast a gap, and killing it again before it ever ran a task would test nothing but start-up.
            wait_for(lambda: readies() > before or done.is_set(), 120, "the restarted worker to be ready", poll=0.1)

    thread = threading.Thread(target=killer, daemon=True)
    started = time.monotonic()
    try:
        thread.start()
        try:
            jobs = life.run(JOBS, prefix="kill9")
        finally:
            done.set()
            thread.join(30)
        elapsed = time.monotonic() - started
        # the killed workers' unacked tasks come back after the visibility timeout: they must start nothing
        r = redis.Redis.from_url(url)
        wait_for(lambda: r.hlen("unacked") == 0, 90, "the killed workers' tasks to be redelivered and acked")
        tally = Tally()
        tally.check_jobs(engine.client, jobs, life.starts, settings.root)
        tally.settle(affected)
        tally.record("fault: worker kill -9", f"{len(kills)} kills over {JOBS} jobs; {tally.recovered}/"
                     f"{tally.affected} hit jobs recovered; extra starts {tally.extra_starts}",
                     kills=len(kills), seed=seed, seconds=round(elapsed, 1))
        assert kills and not errors, errors or "no kill happened"
        tally.assert_clean()
    finally:
        engine.close()
