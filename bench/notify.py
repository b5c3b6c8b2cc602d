"""Benchmark: webhook notification latency, event -> delivered to a local receiver, next to a raw HTTP POST of
the same body to the same receiver, measured in one run on the embedded stack (Redis, worker, beat).

A job runs (a `command` solver sleeping); the bench appends `rule.fired` events to its stream through the
store, as the rules helper does, one at a time. Each sample times from just before the append to the moment
the receiver (http.server in a thread of this process) has read the POST: the outbox write, the dispatcher
(XREADGROUP), the claim, the Celery task, the signed POST. The baseline times a urllib POST of an equal body
to the same receiver. Prints p50/p99 of both, their ratio, and whether p50 <= 250 ms.

    .venv/bin/python bench/notify.py --samples 60
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.latency import percentile  # noqa: E402
from orchestrator.control.client import Client  # noqa: E402
from orchestrator.model.events import EventKind  # noqa: E402
from orchestrator.model.notify import RULE_FIRED, encode_body  # noqa: E402
from orchestrator.model.settings import Settings  # noqa: E402
from orchestrator.model.states import RunState  # noqa: E402
from orchestrator.worker.stack import Stack  # noqa: E402
from tests.conftest import JOB_ACCOUNT, grant_traverse  # noqa: E402
from tests.integration.receivers import WebhookReceiver  # noqa: E402

TARGET_MS = 250.0


def engine_samples(client: Client, receiver: WebhookReceiver, samples: int) -> list[float]:
    client.notify_add("webhook", receiver.url + "/engine", [RULE_FIRED])
    job_id = client.submit_data({"name": "bench-notify", "desktop": {"enabled": False},
                                 "solver": {"name": "command", "command": ["sleep", "600"]}})
    client.wait(job_id, lambda d: d.current is not None and d.current.state is RunState.RUNNING, timeout=60)
    store = client.store
    out = []
    try:
        for i in range(samples + 3):  # the first few warm the worker's connections up
            before = len(receiver.received)
            start = time.time()
            store.append_event(job_id, EventKind.RULE_FIRED, {"rule": "bench", "action": "notify",
                                                              "values": {"i": i}, "reason": "bench"})
            [*_, got] = receiver.wait(before + 1, 10)
            if len(receiver.received) <= before:
                raise TimeoutError(f"sample {i}: no delivery within 10 s")
            if i >= 3:
                out.append(got.at - start)
            time.sleep(0.05)
    finally:
        client.terminate(job_id)
    return out


def raw_samples(receiver: WebhookReceiver, samples: int, size: int) -> list[float]:
    body = encode_body({"pad": "x" * max(0, size - 12)})
    out = []
    for _ in range(samples + 3):
        before = len(receiver.received)
        start = time.time()
        request = urllib.request.Request(receiver.url + "/raw", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).close()
        [*_, got] = receiver.wait(before + 1, 10)
        out.append(got.at - start)
    return out[3:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="e2e-bench-notify-"))
    extra = {}
    if os.geteuid() == 0:  # the engine runs no job as root: the suite's job account, as the tests do
        pwd.getpwnam(JOB_ACCOUNT)
        grant_traverse([Path(sys.executable).resolve().parent, Path(sys.prefix), ROOT, home])
        extra["run_as"] = JOB_ACCOUNT
    settings = Settings(home=home, local_nodes=1, reconcile_interval=0.5, **extra)
    stack = Stack(settings)
    stack.start()
    receiver = WebhookReceiver()
    try:
        client = Client(settings, user="bench")
        engine = [v * 1000 for v in engine_samples(client, receiver, args.samples)]
        size = len(receiver.received[-1].body)
        raw = [v * 1000 for v in raw_samples(receiver, args.samples, size)]
    finally:
        receiver.close()
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)
    e50, e99, r50, r99 = percentile(engine, 50), percentile(engine, 99), percentile(raw, 50), percentile(raw, 99)
    print(f"{'metric':22} {'p50':>9} {'p99':>9}")
    print(f"{'event -> delivered':22} {e50:7.1f}ms {e99:7.1f}ms")
    print(f"{'raw POST (baseline)':22} {r50:7.1f}ms {r99:7.1f}ms")
    print(f"ratio engine/raw p50: {e50 / r50:.1f}x; added p50: {e50 - r50:.1f} ms")
    print(f"target: event -> delivered p50 <= {TARGET_MS:.0f} ms -> {'met' if e50 <= TARGET_MS else 'NOT met'} "
          f"({len(engine)} samples each, body {size} bytes, local receiver)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
