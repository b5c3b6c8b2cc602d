"""Benchmark: how the engine's observation grows with active jobs (local backend, virtual nodes, no desktop).

For each size N (`--sizes 50,300`; the first is the baseline the others are compared with, measured in the same
run), a private engine (orchestrator.worker.stack.Stack: embedded Redis, Celery worker and beat) with N virtual
nodes gets N single-node `sleep` jobs (`desktop: {enabled: false}`) submitted at once, and the bench measures:
  * burst: first submit -> every run RUNNING (s);
  * processes the engine runs per job: the file-sync processes left (a batch job on shared storage has no
    consumer for one) and the engine's resident memory (worker, beat, Redis) per active job;
  * the engine's CPU (worker, beat, Redis) while the N runs sleep, as percent of one core, next to the same
    engine's with no job (measured first, the baseline), and the difference as microseconds of CPU per active
    job per second (the safety net's looks and the watcher);
  * submit -> RUNNING of one more job at a time (--probes), under that load (p50/p99 ms);
  * one full sweep over the N running jobs, timed in this process with the beat stopped (s; ms per job): no
    longer the hot path (the watcher rings for a run's end), but what the safety net costs per look;
  * exit -> ended: with the beat running again, K runs' processes are killed one at a time; from the kill to
    the run's ended state event (p50/p99: how late a run's exit is noticed);
  * terminate: every job terminated at once -> all TERMINATED (jobs/s).
Prints a table and the ratios of each size to the first. Exits 0 whatever the figures; non-zero on errors.

    .venv/bin/python bench/scale.py --sizes 50,300 [--exits 20] [--json]
As root, jobs run as E2E_RUN_AS (default e2e-jobs, which must exist: `make test` creates it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from latency import percentile, signals_deferred  # noqa: E402 (bench helpers; after the path)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="50,300", help="active jobs per round, comma-separated (default 50,300)")
    p.add_argument("--exits", type=int, default=20, help="runs killed one at a time per round (default 20)")
    p.add_argument("--interval", type=float, default=1.0, help="the beat's reconcile interval, s (default 1.0)")
    p.add_argument("--timeout", type=float, default=600.0, help="give up on one phase after this many s")
    p.add_argument("--probes", type=int, default=20, help="jobs submitted one at a time under the load, "
                                                          "timed submit -> RUNNING (default 20)")
    p.add_argument("--terminate-max", type=int, default=300, help="time terminating every job only up to this "
                                                                 "many jobs; larger rounds kill the runs (default 300)")
    p.add_argument("--idle", type=float, default=10.0, help="seconds the engine's CPU is sampled with every "
                                                           "run sleeping (default 10)")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    p.add_argument("--profile", action="store_true", help="print where the timed reconcile pass spends its time")
    args = p.parse_args()
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        p.error("--sizes: comma-separated whole numbers, e.g. 50,300")
    if not args.sizes or min(args.sizes) < 2 or args.exits < 1:
        p.error("--sizes must each be >= 2 and --exits >= 1")
    return args


def tree(pid: int) -> list[int]:
    """A process and its descendants (a prefork worker's children do the work; runs are never among them:
    their wrappers are started in sessions of their own, re-parented to init)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        found.append(current)
        todo.extend(int(c) for c in children)
    return found


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its descendants."""
    total = 0
    for current in tree(pid):
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes and their descendants have used so far."""
    ticks = 0
    for pid in pids:
        for current in tree(pid):
            try:
                fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def sync_processes(home: Path) -> int:
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            line = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"orchestrator.sync.daemon" in line and str(home).encode() in line:
            count += 1
    return count


def wait_until(what: str, check, timeout: float, poll: float = 0.05) -> float:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)
    return time.time()


def one_round(n: int, args: argparse.Namespace) -> dict:
    from orchestrator.cluster.local import tagged_processes
    from orchestrator.control.client import Client
    from orchestrator.engine.lifecycle import Lifecycle
    from orchestrator.engine.sweep import Sweeper
    from orchestrator.model.events import EventKind
    from orchestrator.model.settings import Settings
    from orchestrator.model.spec import validate_spec
    from orchestrator.model.states import JobState, RunState
    from orchestrator.store.jobs import JobStore
    from orchestrator.worker.stack import Stack

    home = Path(tempfile.mkdtemp(prefix="e2e-scale-"))
    home.chmod(0o711)
    settings = Settings(home=home, local_nodes=n + args.probes, local_cores_per_node=1,
                        reconcile_interval=args.interval)
    stack = Stack(settings)
    try:
        with signals_deferred():
            stack.start()
        client = Client(settings, user="bench")
        store = client.store
        # The baseline: the same engine's CPU with no job at all (the beat's ticks, Celery's own upkeep)
        engine = [pid for pid in stack.read().get("pids", {}).values() if pid]
        time.sleep(2)
        c0, t0 = cpu_s(engine), time.monotonic()
        time.sleep(args.idle)
        empty_cpu = (cpu_s(engine) - c0) / (time.monotonic() - t0)
        spec = validate_spec({"name": "scale", "solver": {"name": "command", "command": ["sleep", "3600"]},
                              "cluster": {"nodes": 1, "cores_per_node": 1}, "desktop": {"enabled": False}})
        started = time.time()
        jobs = [client.submit(spec) for _ in range(n)]
        submitted = time.time() - started

        waiting = set(jobs)

        def running() -> bool:
            # only the runs not seen RUNNING yet, their states alone, 1,000 per round trip: a record read per
            # waiting run took this process a core (and the engine's Redis) in a 10,000-job burst
            ids = list(waiting)
            for i in range(0, len(ids), 1000):
                chunk = ids[i:i + 1000]
                waiting.difference_update(j for j, state in zip(chunk, store.run_states(chunk, "run-001"),
                                                                  strict=True) if state == RunState.RUNNING)
            return not waiting
        burst = wait_until(f"{n} runs RUNNING", running, args.timeout, poll=0.5) - started

        pids = stack.read().get("pids", {})
        engine_kib = sum(rss_kib(pid) for pid in pids.values() if pid)
        syncs = sync_processes(home)

        # The engine's CPU while the N runs sleep (nothing to do but the safety net's looks and the watcher)
        time.sleep(args.idle / 2)   # past the burst's tail (the first looks after launch)
        c0, t0 = cpu_s(engine), time.monotonic()
        time.sleep(args.idle)
        idle_cpu = (cpu_s(engine) - c0) / (time.monotonic() - t0)

        # submit -> RUNNING of one more job at a time, under that load
        probes = []
        for _ in range(args.probes):
            t_submit = time.time()
            probe = client.submit(spec)
            wait_until("a probe RUNNING", lambda: store.get_run(probe, "run-001").state is RunState.RUNNING,
                       args.timeout, poll=0.002)
            probes.append(time.time() - t_submit)
            jobs.append(probe)

        # One pass in this process over every running job, the beat stopped (so no other pass runs meanwhile).
        stack.stop_process("beat")
        lc = Lifecycle.create(JobStore.from_url(stack.read()["redis_url"]), settings)
        sweeper = Sweeper(lc)
        sweeper.look_all()  # warm (imports, connections)
        t0 = time.perf_counter()
        observed = sweeper.look_all()
        pass_s = time.perf_counter() - t0
        if args.profile:
            import cProfile
            import pstats

            profile = cProfile.Profile()
            profile.runcall(sweeper.look_all)
            pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(35)
        with signals_deferred():
            stack.start(workers=False, beat=True)

        # exit -> ended: kill one run's processes at a time, wait for its ended state event
        lags = []
        for job_id in jobs[:args.exits]:
            tag = f"{job_id}/run-001"
            pids_of_run = tagged_processes(tag)   # (a scan of /proc: thousands of runs make it slow, so untimed)
            killed = time.time()
            for pid in pids_of_run:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            ended = None
            for event in client.follow(job_id, until=lambda e: e.kind is EventKind.RUN_STATE
                                       and e.data.get("state") in ("FAILED", "COMPLETED", "STOPPED"),
                                       timeout=args.timeout):
                ended = event
            if ended is None or ended.kind is not EventKind.RUN_STATE:
                raise RuntimeError(f"job {job_id}: its killed run never ended")
            lags.append(ended.ts - killed)

        term_rate = float("nan")
        if n <= args.terminate_max:
            t_term = time.time()
            for job_id in jobs:
                client.terminate(job_id)
            wait_until("every job TERMINATED",
                       lambda: all(store.get_job(j).state is JobState.TERMINATED for j in jobs), args.timeout, poll=0.5)
            term_rate = len(jobs) / (time.time() - t_term)
        else:   # (terminating thousands at ~10 jobs/s would take the bench's whole time): end the runs directly
            for job_id in jobs:
                pid = store.get_run(job_id, "run-001").pid
                try:
                    os.killpg(pid, signal.SIGKILL) if pid else None
                except ProcessLookupError:
                    pass
        return {"jobs": n, "submit_s": submitted, "burst_s": burst, "sync_processes": syncs,
                "empty_cpu_pct": 100 * empty_cpu, "idle_cpu_pct": 100 * idle_cpu,
                "idle_cpu_us_per_job_s": 1e6 * max(0.0, idle_cpu - empty_cpu) / n,
                "submit_running_p50_ms": 1000 * percentile(probes, 50),
                "submit_running_p99_ms": 1000 * percentile(probes, 99),
                "engine_mib": engine_kib / 1024, "kib_per_job": engine_kib / n, "observed": observed,
                "pass_s": pass_s, "pass_ms_per_job": 1000 * pass_s / n,
                "exit_ended_p50_s": percentile(lags, 50), "exit_ended_p99_s": percentile(lags, 99),
                "terminate_jobs_per_s": term_rate}
    finally:
        with signals_deferred():
            stack.stop()
        shutil.rmtree(home, ignore_errors=True)


def private_engine_environment() -> None:
    """A private engine's environment: jobs run as E2E_RUN_AS when root, nothing of the caller's engine is used."""
    if os.geteuid() == 0:
        os.environ.setdefault("E2E_RUN_AS", "e2e-jobs")
    for var in ("E2E_HOME", "REDIS_URL", "E2E_REDIS_URL"):
        os.environ.pop(var, None)
    os.umask(0o022)


def main() -> int:
    args = parse_args()
    private_engine_environment()
    rounds = []
    for n in args.sizes:
        print(f"round: {n} active jobs ...", file=sys.stderr, flush=True)
        rounds.append(one_round(n, args))
    cols = [("jobs", "{:d}"), ("burst_s", "{:.2f}"), ("sync_processes", "{:d}"), ("kib_per_job", "{:.0f}"),
            ("empty_cpu_pct", "{:.1f}"), ("idle_cpu_pct", "{:.1f}"), ("idle_cpu_us_per_job_s", "{:.0f}"),
            ("submit_running_p50_ms", "{:.1f}"),
            ("submit_running_p99_ms", "{:.1f}"),
            ("pass_s", "{:.3f}"), ("pass_ms_per_job", "{:.2f}"), ("exit_ended_p50_s", "{:.2f}"),
            ("exit_ended_p99_s", "{:.2f}"), ("terminate_jobs_per_s", "{:.1f}")]
    print(" | ".join(name for name, _ in cols))
    for r in rounds:
        print(" | ".join(fmt.format(r[name]) for name, fmt in cols))
    base = rounds[0]
    for r in rounds[1:]:
        print(f"{r['jobs']} vs {base['jobs']} jobs ({r['jobs'] / base['jobs']:.1f}x): pass "
              f"{r['pass_s'] / base['pass_s']:.2f}x, per job {r['pass_ms_per_job'] / base['pass_ms_per_job']:.2f}x, "
              f"exit->ended p50 {r['exit_ended_p50_s'] / base['exit_ended_p50_s']:.2f}x, "
              f"burst {r['burst_s'] / base['burst_s']:.2f}x")
    if args.json:
        print(json.dumps(rounds, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
