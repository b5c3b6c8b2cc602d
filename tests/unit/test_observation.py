"""Observation without a serial pass: the safety net's schedule (claims are disjoint and leased, ended jobs
leave it), the sweeper's next look (later only for a run the host's watcher follows, sooner for a limit), and
the watcher on real inotify and pidfds (a write rings, a wrapper's end rings at once, a stranger pid is
never followed)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from orchestrator.control.service import ControlService
from orchestrator.engine.lifecycle import Lifecycle
from orchestrator.engine.sweep import SLICE, Sweeper
from orchestrator.engine.watcher import RunWatcher
from orchestrator.model.settings import Settings
from orchestrator.model.states import JobState, RunState

BATCH = {"desktop": {"enabled": False}, "solver": {"name": "command", "command": ["true"]}}


def _settings(tmp_path, **extra) -> Settings:
    values = dict(home=tmp_path / "home", redis_url="redis://x/0", local_nodes=2, local_cores_per_node=1,
                  reconcile_interval=1.0, safety_interval=30.0)
    return Settings(**{**values, **extra})


def _submit(store, settings, n: int, spec=BATCH) -> list[str]:
    celery = type("C", (), {"send_task": lambda *a, **k: None})()
    control = ControlService(settings, store=store, celery=celery)
    return [control.submit_data({**spec, "name": f"j{i}"}) for i in range(n)]


def test_claims_are_disjoint_leased_and_ended_jobs_leave_the_schedule(store, make_store, tmp_path):
    ids = _submit(store, _settings(tmp_path), 5)
    other = make_store()   # a second worker's connection
    first = store.observation.claim_due(3, lease=30)
    second = other.observation.claim_due(3, lease=30)
    assert len(first) == 3 and len(second) == 2 and not set(first) & set(second)
    assert set(first) | set(second) == set(ids)
    assert store.observation.claim_due(10, lease=30) == []          # all claimed: nothing due until the lease
    assert sorted(store.observation.claim_due(10, lease=30, now=time.time() + 31)) == sorted(ids)
    for to in (JobState.TERMINATING, JobState.TERMINATED):           # no longer active
        assert store.transition_job(ids[0], to)
    assert ids[0] not in store.observation.claim_due(10, lease=30, now=time.time() + 62)
    store.observation.schedule({ids[0]: 0.0})                       # never put back once gone
    assert ids[0] not in store.observation.claim_due(10, lease=30, now=time.time() + 93)


def test_jobs_without_a_schedule_entry_are_adopted_due_now(store, tmp_path):
    ids = _submit(store, _settings(tmp_path), 3)
    store._r.delete(store._keys.due)             # jobs stored before the schedule existed (or it was lost)
    assert store.observation.claim_due(10, lease=30) == []
    assert store.observation.adopt_missing() == 3 and store.observation.adopt_missing() == 0
    assert sorted(store.observation.claim_due(10, lease=30)) == sorted(ids)


def _sweeper(store, tmp_path, looked: list[str], **extra) -> Sweeper:
    lc = Lifecycle.create(store, _settings(tmp_path, **extra))
    lc.reconcile_job = lambda job_id: (looked.append(job_id), store.get_job(job_id))[1]
    return Sweeper(lc, host="h1")


def _up_and_running(store, job_id: str) -> None:
    store.transition_job(job_id, JobState.PROVISIONING, expect=[JobState.QUEUED])
    store.transition_job(job_id, JobState.UP, expect=[JobState.PROVISIONING], up_at=time.time())
    for to, src in ((RunState.LAUNCHING, RunState.PENDING), (RunState.RUNNING, RunState.LAUNCHING)):
        store.transition_run(job_id, "run-001", to, expect=[src])


def test_a_full_slice_hands_on_the_rest_and_only_the_queue_head_is_looked_at(store, tmp_path):
    looked: list[str] = []
    ids = _submit(store, _settings(tmp_path), SLICE + 3)
    sweeper = _sweeper(store, tmp_path, looked)
    more: list[int] = []
    sweeper.sweep(on_more=lambda: more.append(1))
    assert more == [1]                                      # a full slice: another worker takes the next one
    sweeper.sweep(on_more=lambda: more.append(2))
    assert more == [1]                                      # the rest (3) did not fill a slice
    assert looked == [ids[0]]                               # FIFO: of the queued jobs, only the head is looked at
    # the others wait for their turn (a kick): not due again for a safety interval; the head soon, and at
    # every tick whatever its schedule said
    assert store.observation.claim_due(100, lease=30, now=time.time() + 5) == [ids[0]]
    sweeper.housekeeping()
    assert store.observation.claim_due(100, lease=30) == [ids[0]]


def test_a_followed_running_job_is_due_only_every_safety_interval_or_at_its_limit(store, tmp_path):
    looked: list[str] = []
    settings = _settings(tmp_path)
    plain, timed, desk = _submit(store, settings, 1) + _submit(store, settings, 1, {**BATCH, "limits": {
        "walltime": 100}}) + _submit(store, settings, 1, {**BATCH, "desktop": {"enabled": True}})
    for job_id in (plain, timed, desk):
        _up_and_running(store, job_id)
    sweeper = _sweeper(store, tmp_path, looked)
    now = time.time()
    assert sweeper.next_look(store.get_job(plain)) < now + 2          # no watcher holds the host: soon
    assert store.observation.hold_watcher("h1", "w", 5)
    sweeper._watcher = (0.0, False)
    assert now + 26 < sweeper.next_look(store.get_job(plain)) < now + 34   # 30 s, spread by +-10%
    sweeper._active = (time.monotonic(), 5000)                          # thousands of jobs: a longer period
    assert now + 134 < sweeper.next_look(store.get_job(plain)) < now + 166
    sweeper._active = (0.0, 0)
    assert sweeper.next_look(store.get_job(timed)) < now + 91         # the walltime warning (at 90 s) comes first
    assert sweeper.next_look(store.get_job(desk)) < now + 2           # a desktop to supervise: soon
    store.transition_run(plain, "run-001", RunState.STOPPING, expect=[RunState.RUNNING])
    assert sweeper.next_look(store.get_job(plain)) < now + 2          # a stopping run: soon
    assert not sweeper._followed(store.get_job(timed)) or store.observation.watcher_alive("h1")


def test_a_job_looked_at_by_another_worker_is_not_looked_at_twice(store, tmp_path):
    looked: list[str] = []
    job_id = _submit(store, _settings(tmp_path), 1)[0]
    sweeper = _sweeper(store, tmp_path, looked)
    held = store.observation.lease(job_id, 10)
    assert held.acquire()
    assert sweeper.look_now(job_id) is False and looked == []
    held.release()
    assert sweeper.look_now(job_id) is True and looked == [job_id]


@pytest.fixture
def watched(store, tmp_path):
    """A started watcher (ringing into a list), a run folder, and a stand-in wrapper process working in it."""
    rang: list[str] = []
    watcher = RunWatcher(store, _settings(tmp_path, reconcile_interval=0.2), rang.append, host="h1")
    watcher._start()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    wrapper = subprocess.Popen(["sleep", "30"], cwd=run_dir)
    try:
        yield watcher, rang, run_dir, wrapper
    finally:
        wrapper.kill()
        wrapper.wait()
        watcher._close()


def _wait_rung(watcher: RunWatcher, rang: list[str], job_id: str, within: float = 3.0) -> float:
    start = time.monotonic()
    while job_id not in rang and time.monotonic() - start < within:
        watcher.wait_once(0.05)
    assert job_id in rang, f"{job_id} never rang"
    return time.monotonic() - start


def test_the_watcher_rings_for_a_write_and_at_once_for_the_wrapper_s_end(store, watched):
    watcher, rang, run_dir, wrapper = watched
    store.observation.announce("h1", "job1", "run-001", 1, wrapper.pid, str(run_dir))
    store.observation.announce("h2", "job2", "run-001", 1, wrapper.pid, str(run_dir))  # another host's
    watcher._read_announcements()
    assert set(watcher.followed) == {"job1"}
    (run_dir / "log").write_text("step 1\n")
    _wait_rung(watcher, rang, "job1")
    rang.clear()
    wrapper.send_signal(signal.SIGKILL)
    assert _wait_rung(watcher, rang, "job1", within=1.0) < 0.5   # the end is never coalesced away
    assert "job1" not in watcher.followed                         # ... and the run is no longer followed
    assert "job2" not in rang


def test_the_watcher_coalesces_a_run_that_writes_all_the_time(watched):
    watcher, rang, run_dir, wrapper = watched
    watcher.follow("job1", "run-001", 1, wrapper.pid, run_dir)
    stop = threading.Event()

    def write() -> None:
        with open(run_dir / "log", "a") as log:
            while not stop.is_set():
                log.write("x\n")
                log.flush()
                time.sleep(0.005)
    writer = threading.Thread(target=write)
    writer.start()
    start = time.monotonic()
    while time.monotonic() - start < 1.0:
        watcher.wait_once(0.05)
    stop.set()
    writer.join()
    assert 3 <= rang.count("job1") <= 7      # ~150 writes in 1 s ring about once per 0.2 s interval


def test_a_pid_that_is_not_the_run_s_wrapper_is_never_followed(watched):
    watcher, rang, run_dir, _ = watched
    # our own pid (alive, but its working folder is not the run's): a recycled pid must not pass for it
    watcher.follow("job1", "run-001", 1, os.getpid(), run_dir)
    assert "job1" not in watcher.followed and rang == ["job1"]   # looked at now, never followed


def test_a_second_watcher_on_the_host_stands_by_until_the_first_lets_go(store, make_store):
    first, second = make_store().observation, make_store().observation
    assert first.hold_watcher("h1", "a", 5) and not second.hold_watcher("h1", "b", 5)
    assert first.hold_watcher("h1", "a", 5)                        # its holder renews it
    first.drop_watcher("h1", "a")
    assert second.hold_watcher("h1", "b", 5) and store.observation.watcher_alive("h1")
