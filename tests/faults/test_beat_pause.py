"""The reconcile loop (beat) stops for a while with jobs in every phase, then starts again: the engine catches
up (runs that ended meanwhile are noticed, terminations finish), and nothing runs twice."""

from __future__ import annotations

import random
import threading
import time

import pytest
import redis

from tests.integration.conftest import Engine, make_settings

from .conftest import Tally, sized
from .driver import Lifecycles

pytestmark = [pytest.mark.integration, pytest.mark.timeout(sized(300, 2400))]

JOBS = sized(16, 80)
PAUSE = sized(10.0, 60.0)   # long enough for every run alive at the stop to end unobserved (runs take 1 s)


def test_reconcile_loop_stopped_then_restarted_catches_up(redis_url, tmp_path):
    url = f"{redis_url}/2"
    redis.Redis.from_url(url).flushdb()
    settings = make_settings(tmp_path / "home", url)
    engine = Engine(settings)
    rng = random.Random(seed := random.randrange(1 << 30))
    life = Lifecycles(engine.client, tmp_path / "starts", window=8)
    hit: set[str] = set()
    marks: dict[str, float] = {}

    def pause_beat() -> None:
        # mid-stream: the runs take 1 s and the watcher ends each at once, so all of them may be over within
        # 5 s (CI once stopped the beat after the last one had ended)
        time.sleep(rng.uniform(0.5, 2.5))
        hit.update(life.alive())
        # When the beat process stops (the workers go on taking submit, launch and terminate tasks) ...
        engine.stack.stop_process("beat")
        marks["stopped"] = time.monotonic()
        time.sleep(PAUSE)
        hit.update(life.alive())
        # ... and starts again after the pause
        engine.stack.start()
        marks["restarted"] = time.monotonic()

    thread = threading.Thread(target=pause_beat, daemon=True)
    try:
        thread.start()
        jobs = life.run(JOBS, prefix="beat")
        thread.join(PAUSE + 30)
        # Then every job ended whole, each solver started once, and the stalled jobs caught up
        tally = Tally()
        tally.check_jobs(engine.client, jobs, life.starts, settings.root)
        tally.settle(hit)
        catch_up = max(life.ended_at[j] for j in hit) - marks["restarted"]
        tally.record("fault: reconcile loop stopped", f"{PAUSE:.0f}s stop: {tally.recovered}/{tally.affected} "
                     f"stalled jobs caught up {catch_up:.1f}s after restart; extra starts {tally.extra_starts}",
                     pause_seconds=PAUSE, catch_up_seconds=round(catch_up, 1), seed=seed)
        assert "restarted" in marks and hit
        tally.assert_clean()
    finally:
        engine.close()
