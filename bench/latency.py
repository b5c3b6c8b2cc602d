"""Benchmark: submit->RUNNING latency of a trivial `command` job on the local backend, against a raw Celery no-op hop.

Starts a private engine (orchestrator.worker.stack.Stack) in a temporary E2E_HOME, plus a bench-only Celery worker
(bench/noop_app.py) on the same Redis. Then, N times and strictly one at a time:
  * Celery no-op: time.time() just before send_task -> time.time() when the no-op task starts in its worker;
  * submit->RUNNING: time.time() just before Client.submit() -> `ts` of the run's RUNNING run.state event
    (written by the engine worker on this host, so the clocks agree); the job is then terminated and awaited
    outside the timed window (after its command has exited), so each job gets a free node.
Prints p50/p90/p99/max per metric, the engine/Celery ratios and whether the targets (p50 <= 50 ms,
p99 <= 200 ms for submit->RUNNING) hold. Exits 0 whatever the figures; non-zero only on errors.

    .venv/bin/python bench/latency.py --jobs 200 [--json] [--redis-url redis://host:6379/15]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
TARGET_P50_MS, TARGET_P99_MS = 50.0, 200.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=200, help="timed samples of each metric (default 200)")
    p.add_argument("--warmup", type=int, default=3, help="untimed samples of each metric first (default 3)")
    p.add_argument("--redis-url", help="use this Redis (ideally a spare database) instead of an embedded one")
    p.add_argument("--reconcile-interval", type=float, default=1.0, help="engine beat period, s (default 1.0)")
    p.add_argument("--timeout", type=float, default=60.0, help="give up on one sample after this many s")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temporary E2E_HOME (logs) afterwards")
    args = p.parse_args()
    if args.jobs < 1 or args.warmup < 0:
        p.error("--jobs must be >= 1 and --warmup >= 0")
    return args


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(metric: str, seconds: list[float]) -> dict:
    ms = [v * 1000 for v in seconds]
    return {"metric": metric, "n": len(ms), "p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99), "max_ms": max(ms)}


class BenchWorker:
    """A Celery worker for bench/noop_app.py, in its own session, configured like the engine's worker."""

    def __init__(self, url: str, home: Path, concurrency: int) -> None:
        from noop_app import QUEUE

        env = {**os.environ, "BENCH_REDIS_URL": url,  # the URL (password) goes by env, never argv
               "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH_DIR), os.environ.get("PYTHONPATH")]))}
        log = open(home / "logs" / "bench-worker.out", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "noop_app", "worker", "-P", "prefork", "-c", str(concurrency),
             "-Q", QUEUE, "-n", f"bench-{secrets.token_hex(3)}@%h", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-l", "INFO", "--logfile", str(home / "logs" / "bench-worker.log")],
            env=env, cwd=home, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)
                return


@contextlib.contextmanager
def signals_deferred():
    """Hold Ctrl-C/SIGTERM until the block ends: Stack.start() records its pids only once all have started."""
    pending: list[int] = []
    old = {sig: signal.signal(sig, lambda signum, _frame: pending.append(signum))
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if pending:
            raise KeyboardInterrupt if pending[0] == signal.SIGINT else SystemExit(128 + pending[0])


def cleanup(home: Path, stack, worker: BenchWorker | None, embedded: bool, keep: bool) -> None:
    """Stop the bench worker and the engine (and an embedded Redis start() never recorded); drop the home."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not strand half the processes
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if worker is not None:
        worker.stop()
    if stack is not None:
        print("stopping the engine...", file=sys.stderr, flush=True)
        stack.stop()
        pidfile = home / "redis" / "redis.pid"  # an embedded Redis a failed start() never recorded
        if embedded and pidfile.exists():
            from orchestrator.worker.stack import pid_alive
            pid = int(pidfile.read_text().strip() or 0)
            if pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
    if keep:
        print(f"kept {home}", file=sys.stderr)
    else:
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    args = parse_args()
    home = Path(tempfile.mkdtemp(prefix="e2e-bench-"))
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    started, stack, worker = time.monotonic(), None, None
    try:
        # Before any orchestrator import: orchestrator.worker.celery_app builds its app from get_settings() at import.
        os.environ["E2E_HOME"] = str(home)
        for var in ("REDIS_URL", "E2E_REDIS_URL"):
            os.environ.pop(var, None)
        sys.path[:0] = [str(ROOT), str(BENCH_DIR)]
        import redis

        from orchestrator.control.client import Client
        from orchestrator.model.events import EventKind
        from orchestrator.model.paths import JobPaths
        from orchestrator.model.settings import Settings
        from orchestrator.model.spec import validate_spec
        from orchestrator.worker.stack import Stack

        settings = Settings(home=home, redis_url=args.redis_url, local_nodes=2, local_cores_per_node=1,
                            reconcile_interval=args.reconcile_interval)
        stack = Stack(settings)
        (home / "logs").mkdir(parents=True, exist_ok=True)
        with signals_deferred():
            url = stack.start()["redis_url"]
        r = redis.Redis.from_url(url, socket_timeout=args.timeout + 5)
        if args.redis_url and r.exists("e2e:jobs"):
            print("warning: this Redis database already holds engine state; other engines' jobs may skew "
                  "the figures or contend for node leases", file=sys.stderr)
        os.environ["BENCH_REDIS_URL"] = url
        import noop_app
        noop_app.app.conf.broker_url = url
        with signals_deferred():
            worker = BenchWorker(url, home, settings.worker_concurrency)
        client = Client(settings, user="bench")
        spec = validate_spec({"name": "bench-true", "solver": {"name": "command", "command": ["true"]},
                              "cluster": {"nodes": 1, "cores_per_node": 1}, "desktop": {"enabled": False}})
        reply_key = f"bench:noop:{secrets.token_hex(4)}"

        def noop_sample() -> float:
            sent = time.time()
            noop_app.app.send_task(noop_app.TASK, args=[reply_key, sent], queue=noop_app.QUEUE)
            reply = r.blpop([reply_key], timeout=args.timeout)
            if reply is None:
                raise RuntimeError(f"no-op task did not run within {args.timeout:.0f}s; see {home}/logs")
            return float(reply[1])

        def terminated(e) -> bool:
            return e.kind is EventKind.JOB_STATE and e.data.get("state") == "TERMINATED"

        def settled(e) -> bool:  # RUNNING, or a state the run/job cannot reach RUNNING from
            return (e.kind is EventKind.RUN_STATE and e.data.get("state") in ("RUNNING", "FAILED", "STOPPED")) \
                or (e.kind is EventKind.JOB_STATE and e.data.get("state") in ("FAILED", "TERMINATED"))

        def job_sample() -> float:
            sent = time.time()
            job_id = client.submit(spec)
            last = None
            for last in client.follow(job_id, until=settled, timeout=args.timeout):  # noqa: B007 (keeps the last)
                pass
            if last is None or not settled(last) or last.data.get("state") != "RUNNING":
                what = f"ended at {last.kind.value} {last.data}" if last and settled(last) else "timed out"
                raise RuntimeError(f"job {job_id} never reached RUNNING ({what}); see {home}/logs")
            latency = last.ts - sent
            # Untimed from here. Let `true` exit first: terminating a run mid-exit leaves the release to the next
            # reconcile pass, which would phase-lock every next submit to just after a pass (and take longer).
            exit_file = JobPaths.for_job(settings.root, job_id).run(last.data["run"]).exit_code
            deadline = time.monotonic() + args.timeout
            while not exit_file.exists() and time.monotonic() < deadline:
                time.sleep(0.002)
            client.terminate(job_id)  # frees the node for the next job
            done = False
            for ev in client.follow(job_id, after=last.id, until=terminated, timeout=args.timeout):
                done = terminated(ev)
            if not done:
                raise RuntimeError(f"job {job_id} not TERMINATED within {args.timeout:.0f}s; see {home}/logs")
            return latency

        for _ in range(args.warmup):  # also waits out both workers' start-up
            noop_sample()
            job_sample()
        noop_s, job_s = [], []
        for i in range(args.jobs):  # interleaved, so both metrics see the same conditions
            noop_s.append(noop_sample())
            job_s.append(job_sample())
            if (i + 1) % 50 == 0 and i + 1 < args.jobs:
                print(f"  {i + 1}/{args.jobs} samples", file=sys.stderr, flush=True)
        r.delete(reply_key)
    finally:
        cleanup(home, stack, worker, embedded=args.redis_url is None, keep=args.keep)

    rows = [summarize("submit->RUNNING", job_s), summarize("celery no-op", noop_s)]
    eng, base = rows
    result = {
        "jobs": args.jobs, "warmup": args.warmup, "elapsed_s": round(time.monotonic() - started, 2),
        "redis": "external" if args.redis_url else "embedded",
        "reconcile_interval": args.reconcile_interval, "worker_concurrency": settings.worker_concurrency,
        "metrics": rows,
        "ratio_p50": eng["p50_ms"] / base["p50_ms"], "ratio_p99": eng["p99_ms"] / base["p99_ms"],
        "targets": {"p50_le_50ms": eng["p50_ms"] <= TARGET_P50_MS, "p99_le_200ms": eng["p99_ms"] <= TARGET_P99_MS},
    }
    print(f"{'metric':<17}{'n':>6}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for row in rows:
        print(f"{row['metric']:<17}{row['n']:>6}" + "".join(f"{row[k]:>10.1f}" for k in
                                                          ("p50_ms", "p90_ms", "p99_ms", "max_ms")))
    print(f"ratio submit->RUNNING / celery no-op: p50 {result['ratio_p50']:.1f}x, p99 {result['ratio_p99']:.1f}x")
    for label, key, value in (("p50 <= 50 ms", "p50_le_50ms", eng["p50_ms"]),
                              ("p99 <= 200 ms", "p99_le_200ms", eng["p99_ms"])):
        print(f"target {label}: {'holds' if result['targets'][key] else 'MISSED'} ({value:.1f} ms)")
    print(f"({result['redis']} Redis, worker concurrency {settings.worker_concurrency}, reconcile every "
          f"{args.reconcile_interval:g}s, {args.warmup} warm-up samples, {result['elapsed_s']:.1f}s total)")
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
