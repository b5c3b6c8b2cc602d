"""Benchmark: a monitor rule's reaction time, residual line written -> rule action taken (pause requested),
next to log line -> SSE client of the same lines, in the same run, against a private engine (workers + beat on
the embedded Redis, the API served by `e2e serve` in its own process).

One `command` job (`sleep 3600`) with the rule `converged: p < 1e-3 -> pause`. Per sample: a fresh run (the
rule fires once per run: `e2e rerun` re-arms it), an SSE client of /jobs/{id}/logs/stream, then after a random
0-1 s (off any polling phase) the bench appends `residual: p 1e-4` to the run's log. Measured: the run's
stop_requested_at (set by the worker as it asks for the pause) minus the write, and the SSE client's arrival of
the same line minus the write. The run's write rings the host's run watcher, which has a worker look at the
job at once (a run writing all the time rings at most once per E2E_RECONCILE_INTERVAL; --interval sets it).
Target: p50 <= 1 s.

    .venv/bin/python bench/rules.py [--samples 20] [--interval 1.0] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api import Receiver, Server, auth, sse_lines, wait_running  # noqa: E402
from bench.latency import percentile  # noqa: E402
from orchestrator.model.settings import Settings  # noqa: E402
from orchestrator.store.jobs import JobStore  # noqa: E402
from orchestrator.worker.stack import Stack  # noqa: E402

TARGET_P50_S = 1.0
SPEC = {"name": "bench-rules", "desktop": {"enabled": False}, "cluster": {"nodes": 1, "cores_per_node": 1},
        "solver": {"name": "command", "command": ["sleep", "3600"]},
        "monitor": {"rules": [{"name": "conv", "when": "converged", "below": {"p": 1e-3}, "action": "pause"}]}}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=20, help="rule firings measured (default 20)")
    p.add_argument("--interval", type=float, default=1.0, help="E2E_RECONCILE_INTERVAL (default 1.0 s)")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = p.parse_args()
    if args.samples < 1 or args.interval <= 0:
        p.error("--samples must be >= 1 and --interval > 0")
    return args


def sample(settings: Settings, store: JobStore, base: str, token: str, job_id: str, index: int,
           rng: random.Random) -> tuple[float, float]:
    """One firing on a fresh run: (rule latency, SSE latency) in seconds."""
    run = wait_running(base, token, job_id)
    log = settings.root / "jobs" / job_id / "runs" / run["id"] / run["log_file"]
    log.touch()
    receiver = Receiver("log line -> SSE", sse_lines(f"{base}/jobs/{job_id}/logs/stream", token,
                                                     {"offset": log.stat().st_size}), "bench-line ")
    receiver.start()
    receiver.ready.wait(5)
    time.sleep(0.5 + rng.uniform(0, 1.0))  # the stream is in its read loop; the write lands at a random phase
    wall, mono = time.time(), time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"bench-line {index}#\nresidual: p 1e-4\n")
    deadline = time.monotonic() + 30
    asked = None
    while time.monotonic() < deadline and (asked is None or index not in receiver.arrived):
        asked = asked or store.get_run(job_id, run["id"]).stop_requested_at
        time.sleep(0.002)
    if asked is None or index not in receiver.arrived:
        raise RuntimeError(f"sample {index}: the rule did not fire or the line did not arrive within 30 s")
    reason = store.get_run(job_id, run["id"]).stop_reason or ""
    if not reason.startswith("rule conv: converged"):
        raise RuntimeError(f"sample {index}: paused for another reason: {reason!r}")
    return asked - wall, receiver.arrived[index] - mono


def wait_ended(base: str, token: str, job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = httpx.get(f"{base}/jobs/{job_id}", headers=auth(token), timeout=10).json()
        if "rerun" in doc["allowed"]:
            return
        time.sleep(0.1)
    raise RuntimeError(f"job {job_id}: the paused run did not end within {timeout:.0f}s")


def main() -> int:
    args = parse_args()
    load = os.getloadavg()[0]
    home = Path(tempfile.mkdtemp(prefix="e2e-bench-rules-"))
    home.chmod(0o711)  # the job account passes through to its job folder (mkdtemp makes it 0700)
    settings = Settings(home=home, local_nodes=1, local_cores_per_node=1, reconcile_interval=args.interval,
                        stop_grace=2, kill_grace=1)
    stack, server = Stack(settings), None
    rng = random.Random(17)
    rule, sse = [], []
    try:
        url = stack.start()["redis_url"]
        settings = Settings(**{**settings.model_dump(), "redis_url": url})
        store = JobStore.from_url(url)
        # a root engine runs no job as root: the bench's jobs run as E2E_BENCH_ACCOUNT (default e2e-jobs)
        account = os.environ.get("E2E_BENCH_ACCOUNT", "e2e-jobs") if os.geteuid() == 0 else ""
        token = store.users.create("bench", os_user=account)
        server = Server(home, url, 1)
        server.wait(token)
        reply = httpx.post(f"{server.base}/jobs", headers=auth(token), timeout=30, json={"spec": SPEC})
        if reply.status_code != 201:
            raise RuntimeError(f"submit refused: {reply.status_code} {reply.text}")
        job_id = reply.json()["id"]
        for index in range(args.samples):
            if index:
                wait_ended(server.base, token, job_id)
                httpx.post(f"{server.base}/jobs/{job_id}/rerun", headers=auth(token), timeout=30,
                           json={}).raise_for_status()
            took_rule, took_sse = sample(settings, store, server.base, token, job_id, index, rng)
            rule.append(took_rule)
            sse.append(took_sse)
        httpx.post(f"{server.base}/jobs/{job_id}/terminate", headers=auth(token), timeout=30)
    finally:
        if server is not None:
            server.stop()
        stack.stop()
    figures = {
        "samples": args.samples, "reconcile_interval_s": args.interval, "load_1min": round(load, 2),
        "rule_p50_ms": round(1000 * percentile(rule, 50), 1), "rule_p95_ms": round(1000 * percentile(rule, 95), 1),
        "rule_max_ms": round(1000 * max(rule), 1),
        "sse_p50_ms": round(1000 * percentile(sse, 50), 1), "sse_p95_ms": round(1000 * percentile(sse, 95), 1),
    }
    figures["ratio_p50"] = round(figures["rule_p50_ms"] / max(figures["sse_p50_ms"], 0.1), 2)
    print(f"residual line -> rule action (pause requested): p50 {figures['rule_p50_ms']} ms, "
          f"p95 {figures['rule_p95_ms']} ms, max {figures['rule_max_ms']} ms "
          f"(target p50 <= {TARGET_P50_S * 1000:.0f} ms)")
    print(f"log line -> SSE client (same lines):            p50 {figures['sse_p50_ms']} ms, "
          f"p95 {figures['sse_p95_ms']} ms")
    print(f"ratio rule/SSE at p50: {figures['ratio_p50']}x; reconcile interval {args.interval:g} s, "
          f"{args.samples} samples, load {load:.2f}")
    if args.json:
        print(json.dumps(figures))
    return 0 if figures["rule_p50_ms"] <= TARGET_P50_S * 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
