"""Load: hundreds of queued jobs over a 6-node local backend with short real runs; all complete, none is lost,
nodes are handed out in submission order, and the engine's CPU and Redis memory per job are reported."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import pytest
import redis

from orchestrator.model.events import EventKind
from orchestrator.model.states import JOB_TERMINAL
from tests.integration.conftest import Engine, make_settings, wait_for

from .conftest import Tally, recording_job, sized

pytestmark = [pytest.mark.integration, pytest.mark.timeout(sized(300, 2400))]

JOBS = int(os.environ.get("E2E_LOAD_JOBS", "0")) or sized(50, 500)  # the variable: a size of your own
NODES = int(os.environ.get("E2E_LOCAL_NODES", "6"))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants, live and reaped (utime, stime, cutime, cstime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = sum(int(f) for f in fields[11:15]) / TICK
    return own + sum(cpu_seconds(int(child)) for child in children)


def test_load_hundreds_of_queued_jobs_over_six_nodes(redis_url, tmp_path):
    url = f"{redis_url}/5"
    r = redis.Redis.from_url(url)
    r.flushdb()
    settings = make_settings(tmp_path / "home", url, local_nodes=NODES, local_cores_per_node=1)
    engine = Engine(settings)
    client = engine.client
    starts = tmp_path / "starts"
    try:
        pids = engine.stack.read()["pids"]
        cpu0 = {name: cpu_seconds(pids[name]) for name in ("worker", "beat")}
        mem0 = r.info("memory")["used_memory"]
        t0 = time.monotonic()
        # Given JOBS jobs queued at once, each a short real run that ends its job as soon as it finishes
        # (terminate_on_end, a batch job): nodes come free without anyone calling terminate
        jobs = [client.submit_data(recording_job(f"load-{i:04d}", starts, seconds=0.2,
                                                 limits={"terminate_on_end": True})) for i in range(JOBS)]
        queued_mem = r.info("memory")["used_memory"] - mem0
        # When the engine works through them
        store = client.store
        wait_for(lambda: all(store.get_job(j).state in JOB_TERMINAL for j in jobs), 60 + 3 * JOBS,
                 f"{JOBS} jobs terminal", poll=2.0)
        elapsed = time.monotonic() - t0
        cpu = {name: cpu_seconds(pids[name]) - cpu0[name] for name in cpu0}
        kept_mem = r.info("memory")["used_memory"] - mem0
        # Then every job ran once and was stored whole, and nodes went out in submission order
        tally = Tally()
        tally.check_jobs(client, jobs, starts, settings.root)
        tally.settle(set(jobs))
        times = [_state_times(client, j) for j in jobs]
        leased_at = [t["PROVISIONING"] for t in times]
        inversions = sum(1 for a, b in zip(leased_at, leased_at[1:], strict=False) if b < a)
        busy = sum(t["TERMINATED"] - t["PROVISIONING"] for t in times) / (NODES * elapsed)
        phases = {f"{a}->{b}": round(statistics.mean(t[b] - t[a] for t in times), 2)
                  for a, b in (("PROVISIONING", "RUNNING"), ("RUNNING", "COMPLETED"), ("COMPLETED", "TERMINATING"),
                               ("TERMINATING", "TERMINATED"))}
        figure = (f"{JOBS} jobs / {NODES} nodes in {elapsed:.0f}s ({JOBS / elapsed * 60:.0f}/min); engine CPU "
                  f"{(cpu['worker'] + cpu['beat']) / JOBS * 1000:.0f} ms/job; Redis {kept_mem / JOBS / 1024:.1f} "
                  f"KiB/job kept; order inversions {inversions}")
        tally.record("load: queued jobs", figure, seconds=round(elapsed, 1),
                     jobs_per_minute=round(JOBS / elapsed * 60, 1),
                     worker_cpu_ms_per_job=round(cpu["worker"] / JOBS * 1000),
                     beat_cpu_ms_per_job=round(cpu["beat"] / JOBS * 1000),
                     redis_bytes_per_job_queued=queued_mem // JOBS, redis_bytes_per_job_kept=kept_mem // JOBS,
                     order_inversions=inversions, node_busy_fraction=round(busy, 2), mean_phase_seconds=phases)
        assert inversions == 0, "a job got nodes before one submitted earlier"
        tally.assert_clean()
    finally:
        engine.close()


def _state_times(client, job_id: str) -> dict[str, float]:
    """When the job (and its run) first entered each state, from its event stream (stream time, seconds);
    PROVISIONING is when it was given nodes."""
    first: dict[str, float] = {}
    for event in client.events(job_id):
        if event.kind in (EventKind.JOB_STATE, EventKind.RUN_STATE) and event.data.get("state"):
            first.setdefault(event.data["state"], int(event.id.partition("-")[0]) / 1000)
    return first
