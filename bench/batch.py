"""Benchmark: trivial batch jobs end to end (submit -> run `true` -> TERMINATED, results stored), in jobs/s.

A private engine (orchestrator.worker.stack.Stack: embedded Redis, Celery worker and beat) with --nodes virtual
nodes gets --jobs single-node jobs running `true` (`desktop: {enabled: false}`, `limits: {terminate_on_end:
true}`) submitted at once through the engine's client, as a queue submission would be. Each job is provisioned,
launched, noticed ended, terminated, its results stored and its node freed for the next; the bench times the
first submit -> the last job TERMINATED, and checks every run COMPLETED with exit code 0 and its results folder.

The baseline, measured in the same run on the same Redis: as many Celery no-op tasks through a bench worker with
the engine worker's concurrency and transport settings (bench/noop_app.py), sent at once, until the last has run:
the queue hop alone. Also printed: the engine's CPU (worker, beat, Redis) and the Redis commands it ran, per job.
Exits 0 whatever the figures.

    .venv/bin/python bench/batch.py [--jobs 500] [--nodes 64] [--json]
As root, jobs run as E2E_RUN_AS (default e2e-jobs, which must exist: `make test` creates it).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from latency import BenchWorker, percentile, signals_deferred  # noqa: E402 (bench helpers; after the path)
from scale import cpu_s, private_engine_environment, wait_until  # noqa: E402

TARGET_JOBS_PER_S = 100.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=500, help="batch jobs submitted at once (default 500)")
    p.add_argument("--nodes", type=int, default=64, help="virtual nodes of the engine (default 64)")
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this many s")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = p.parse_args()
    if args.jobs < 1 or args.nodes < 1:
        p.error("--jobs and --nodes must be >= 1")
    return args


def celery_baseline(url: str, home: Path, jobs: int, concurrency: int, timeout: float) -> float:
    """No-op tasks/s through a bench worker configured like the engine's, all sent at once."""
    import noop_app
    import redis
    noop_app.app.conf.broker_url = url
    worker = BenchWorker(url, home, concurrency=concurrency)
    client = redis.Redis.from_url(url)
    try:
        warm = f"bench:noop:{secrets.token_hex(4)}"
        noop_app.app.send_task(noop_app.TASK, args=[warm, time.time()], queue=noop_app.QUEUE)
        wait_until("the bench worker", lambda: client.llen(warm) == 1, 60)
        reply = f"bench:noop:{secrets.token_hex(4)}"
        started = time.time()
        for _ in range(jobs):
            noop_app.app.send_task(noop_app.TASK, args=[reply, time.time()], queue=noop_app.QUEUE)
        done = wait_until(f"{jobs} no-op tasks", lambda: client.llen(reply) >= jobs, timeout, poll=0.01)
        return jobs / (done - started)
    finally:
        worker.stop()


def redis_calls(url: str) -> dict[str, int]:
    """Commands the Redis server has run so far, by name (its commandstats; Lua scripts' commands included)."""
    import redis

    stats = redis.Redis.from_url(url).info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def run(args: argparse.Namespace) -> dict:
    from orchestrator.control.client import Client
    from orchestrator.model.settings import Settings
    from orchestrator.model.spec import validate_spec
    from orchestrator.model.states import JobState, RunState
    from orchestrator.worker.stack import Stack

    home = Path(tempfile.mkdtemp(prefix="e2e-batch-"))
    home.chmod(0o711)
    settings = Settings(home=home, local_nodes=args.nodes, local_cores_per_node=1)
    stack = Stack(settings)
    try:
        with signals_deferred():
            stack.start()
        url = stack.read()["redis_url"]
        baseline = celery_baseline(url, home, args.jobs, settings.worker_concurrency, args.timeout)
        client = Client(settings, user="bench")
        store = client.store
        spec = validate_spec({"name": "batch", "solver": {"name": "command", "command": ["true"]},
                              "cluster": {"nodes": 1, "cores_per_node": 1}, "desktop": {"enabled": False},
                              "limits": {"terminate_on_end": True}})
        # warm: imports, connections
        client.wait(client.submit(spec), lambda doc: doc.state is JobState.TERMINATED, timeout=60)
        engine = [pid for pid in stack.read().get("pids", {}).values() if pid]
        calls0 = redis_calls(url)
        cpu0 = cpu_s(engine)
        started = time.time()
        submitted_at: dict[str, float] = {}
        for _ in range(args.jobs):
            submitted_at[client.submit(spec)] = time.time()
        submit_s = time.time() - started
        # a job leaves the active set as it ends: one command per look, so the counts below are the engine's
        wait_until(f"{args.jobs} jobs TERMINATED", lambda: store.active_count() == 0, args.timeout, poll=0.1)
        cpu = cpu_s(engine) - cpu0
        calls = {name: (n - calls0.get(name, 0)) / args.jobs for name, n in redis_calls(url).items()}
        ended_at = {job_id: store.get_job(job_id).updated_at for job_id in submitted_at}
        elapsed = max(ended_at.values()) - started
        bad = []
        for job_id in submitted_at:
            job, run = store.get_job(job_id), store.get_run(job_id, "run-001")
            if run.state is not RunState.COMPLETED or run.exit_code != 0 or not job.results \
                    or not Path(job.results).is_dir():
                bad.append(f"{job_id}: run {run.state.value} exit {run.exit_code} results {job.results!r}")
        if bad:
            raise RuntimeError(f"{len(bad)} jobs did not end as a completed batch job: " + "; ".join(bad[:5]))
        lat = [ended_at[j] - submitted_at[j] for j in submitted_at]
        return {"jobs": args.jobs, "nodes": args.nodes, "submit_s": submit_s, "elapsed_s": elapsed,
                "jobs_per_s": args.jobs / elapsed, "celery_noop_per_s": baseline,
                "ratio_to_celery": args.jobs / elapsed / baseline,
                "engine_cpu_ms_per_job": 1000 * cpu / args.jobs,
                "redis_calls_per_job": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
                "latency_p50_s": percentile(lat, 50), "latency_p99_s": percentile(lat, 99)}
    finally:
        with signals_deferred():
            stack.stop()
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    args = parse_args()
    private_engine_environment()
    r = run(args)
    print(f"{r['jobs']} trivial batch jobs on {r['nodes']} nodes: {r['elapsed_s']:.2f} s end to end "
          f"({r['jobs_per_s']:.1f} jobs/s; submitting took {r['submit_s']:.2f} s); "
          f"submit -> TERMINATED p50 {r['latency_p50_s']:.2f} s, p99 {r['latency_p99_s']:.2f} s")
    print(f"engine CPU (worker, beat, Redis): {r['engine_cpu_ms_per_job']:.1f} ms per job; Redis commands per "
          f"job: {sum(r['redis_calls_per_job'].values()):.0f} (" +
          ", ".join(f"{k} {v:.1f}" for k, v in list(r["redis_calls_per_job"].items())[:12]) + ")")
    print(f"baseline, same run: Celery no-op tasks {r['celery_noop_per_s']:.0f}/s; "
          f"ratio jobs/no-op tasks {r['ratio_to_celery']:.3f}")
    verdict = "met" if r["jobs_per_s"] >= TARGET_JOBS_PER_S else "not met"
    print(f"target >= {TARGET_JOBS_PER_S:.0f} jobs/s: {verdict}")
    if args.json:
        print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
