"""Benchmark: what the engine adds to pause --freeze, resume and a graceful pause, against sending the raw
signal to the same kind of process tree directly, measured in one run on the local backend.

A job runs a `command` solver that starts two "rank" processes (busy loops of short sleeps) and writes a
checkpoint file when it gets SIGTERM (the command plugin's graceful stop). Each sample times:
  * freeze:  Client.pause(freeze=True) -> every process of the run is in state T (stopped), read from /proc;
  * resume:  Client.resume() -> no process of the run is in state T any more;
  * pause:   Client.pause() -> the checkpoint file exists (then restart, untimed, for the next sample).
The baseline does the same to an identical tree started with `setsid`, with os.killpg directly.
Prints p50/p99 per metric, the engine-minus-raw overhead, and whether it is <= 100 ms p50.

    .venv/bin/python bench/control.py --samples 20
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.latency import percentile  # noqa: E402
from orchestrator.cluster.local import group_members, process_states, tagged_processes  # noqa: E402
from orchestrator.control.client import Client  # noqa: E402
from orchestrator.model.settings import Settings  # noqa: E402
from orchestrator.model.states import RunState  # noqa: E402
from orchestrator.worker.stack import Stack  # noqa: E402

TARGET_MS = 100.0
TREE = """
trap 'echo ok > ckpt; kill $a $b 2>/dev/null; exit 0' TERM
(while :; do sleep 0.01; done) & a=$!
(while :; do sleep 0.01; done) & b=$!
for i in $(seq 1 100000); do echo "progress: $i/100000"; sleep 0.05 & wait $!; done
"""


def until(predicate, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("sample timed out")
        time.sleep(0.0005)
    return time.perf_counter()


def run_state(client: Client, job_id: str) -> RunState:
    doc = client.status(job_id)
    return next(r for r in doc.runs_detail if r.id == doc.current_run).state


def engine_samples(client: Client, home: Path, samples: int) -> dict[str, list[float]]:
    job_id = client.submit_data({"name": "bench-control", "desktop": {"enabled": False},
                                 "solver": {"name": "command", "command": ["bash", "-c", TREE]}})
    tag = f"{job_id}/run-001"
    ckpt = home / "jobs" / job_id / "runs" / "run-001" / "ckpt"
    out: dict[str, list[float]] = {"freeze": [], "resume": [], "pause": []}
    for _ in range(samples):
        until(lambda: run_state(client, job_id) is RunState.RUNNING and len(tagged_processes(tag)) >= 4, 60)
        t0 = time.perf_counter()
        client.pause(job_id, freeze=True)
        out["freeze"].append(until(lambda: process_states(tagged_processes(tag)) == {"T"}) - t0)
        t0 = time.perf_counter()
        client.resume(job_id)
        out["resume"].append(until(lambda: "T" not in process_states(tagged_processes(tag))) - t0)
        ckpt.unlink(missing_ok=True)
        t0 = time.perf_counter()
        client.pause(job_id)
        out["pause"].append(until(ckpt.exists) - t0)
        until(lambda: run_state(client, job_id) is RunState.PAUSED, 60)
        client.restart(job_id)
    client.terminate(job_id)
    return out


def raw_samples(work: Path, samples: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"freeze": [], "resume": [], "pause": []}
    for _ in range(samples):
        ckpt = work / "ckpt"
        ckpt.unlink(missing_ok=True)
        proc = subprocess.Popen(["setsid", "bash", "-c", TREE], cwd=work, stdout=subprocess.DEVNULL)
        until(lambda: len(group_members(proc.pid)) >= 4)
        t0 = time.perf_counter()
        os.killpg(proc.pid, signal.SIGSTOP)
        out["freeze"].append(until(lambda: process_states(group_members(proc.pid)) == {"T"}) - t0)
        t0 = time.perf_counter()
        os.killpg(proc.pid, signal.SIGCONT)
        out["resume"].append(until(lambda: "T" not in process_states(group_members(proc.pid))) - t0)
        t0 = time.perf_counter()
        os.killpg(proc.pid, signal.SIGTERM)
        out["pause"].append(until(ckpt.exists) - t0)
        proc.wait(10)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="e2e-bench-control-"))
    settings = Settings(home=home, local_nodes=2, reconcile_interval=0.5)
    stack = Stack(settings)
    stack.start()
    try:
        client = Client(settings, user="bench")
        engine = engine_samples(client, settings.root, args.samples)
        raw = raw_samples(home, args.samples)
    finally:
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)
    print(f"{'metric':8} {'engine p50':>11} {'engine p99':>11} {'raw p50':>9} {'raw p99':>9} {'added p50':>10}")
    ok = True
    for metric in ("freeze", "resume", "pause"):
        e = [v * 1000 for v in engine[metric]]
        r = [v * 1000 for v in raw[metric]]
        added = percentile(e, 50) - percentile(r, 50)
        ok = ok and added <= TARGET_MS
        print(f"{metric:8} {percentile(e, 50):9.1f}ms {percentile(e, 99):9.1f}ms {percentile(r, 50):7.1f}ms "
              f"{percentile(r, 99):7.1f}ms {added:8.1f}ms")
    print(f"target: engine adds <= {TARGET_MS:.0f} ms p50 -> {'met' if ok else 'NOT met'} "
          f"({args.samples} samples each, local backend)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
