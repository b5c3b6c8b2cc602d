"""Benchmark: submit -> a VNC client logged in to the desktop on an ssh head node, against the local backend.

Starts the ssh test cluster (tests/integration/sshcluster.py: one node, in its own network namespace when run
as root, else an sshd on 127.0.0.2; the node gets its own /tmp/.X11-unix so its Xvnc leaves this machine's X
sockets alone) and a private engine (orchestrator.worker.stack.Stack, embedded Redis) with that inventory. Then, N
times, interleaved and one at a time:
  * ssh: time.time() just before Client.submit() of a `sleep` job with the desktop on, on the ssh backend ->
    the moment this process completes a VncAuth login over a direct-tcpip channel of its own (kept) ssh
    connection to the node, polling the job record for the desktop's port;
  * local: the same on the local backend, the login over loopback TCP.
Each job is terminated outside the timed window. Prints p50/p90/max of both and their ratio. Exit 0 whatever
the figures; non-zero only on errors.

    .venv/bin/python bench/desktop_ssh.py --jobs 5 [--json]
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.desktop import desktop_bench_args, percentile  # noqa: E402


def main() -> int:
    args = desktop_bench_args(__doc__, 5, "each backend")
    if args is None:
        return 2
    home = Path(tempfile.mkdtemp(prefix="e2e-bench-desktop-ssh-"))
    os.environ["E2E_HOME"] = str(home)
    for var in ("REDIS_URL", "E2E_REDIS_URL", "E2E_INVENTORY"):
        os.environ.pop(var, None)
    from orchestrator.cluster import sshconn
    from orchestrator.cluster.ssh import SSHBackend
    from orchestrator.control.client import Client
    from orchestrator.desktop.rfb import RFBError, handshake
    from orchestrator.desktop.secrets import DesktopSecrets
    from orchestrator.desktop.service import desktop_record
    from orchestrator.model.settings import Settings
    from orchestrator.model.states import JOB_TERMINAL
    from orchestrator.worker.stack import Stack
    from tests.integration.sshcluster import NodeCluster

    cluster = NodeCluster(home / "cluster", count=1, private=[Path("/tmp/.X11-unix")])
    stack = None
    samples: dict[str, list[float]] = {"ssh": [], "local": []}
    try:
        cluster.start()
        # short stop graces: `sleep` ignores the graceful stop, and terminating is outside the timed window
        settings = Settings(home=home, local_nodes=2, local_cores_per_node=1, inventory=cluster.inventory(),
                            stop_grace=1, kill_grace=2)
        stack = Stack(settings)
        stack.start()
        client = Client(settings, user="bench")
        backend = SSHBackend(settings)
        node = backend.inventory()[0]
        backend.probe(node)  # the kept connection exists before the timed window, as in a running engine

        def login(backend_name: str, port: int, password: str) -> None:
            if backend_name == "ssh":
                stream = backend.open_tcp(node, port)
            else:
                stream = socket.create_connection(("127.0.0.1", port), timeout=5)
            try:
                handshake(stream, password)
            finally:
                stream.close()

        def sample(backend_name: str) -> float:
            spec = {"name": f"bench-desktop-{backend_name}", "solver": {"name": "command", "command": ["sleep", "600"]},
                    "cluster": {"backend": backend_name, "nodes": 1, "cores_per_node": 1}}
            started = time.time()
            job_id = client.submit_data(spec)
            secrets = DesktopSecrets(client.store)
            deadline = time.monotonic() + args.timeout
            while True:
                port = desktop_record(client.store.get_job(job_id)).vnc_port
                secret = secrets.read(job_id)
                if port and secret:
                    try:
                        login(backend_name, int(port), secret.password)
                        break
                    except (OSError, RFBError):
                        pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no VNC login to the {backend_name} desktop within {args.timeout:.0f}s")
                time.sleep(0.005)
            elapsed = time.time() - started
            client.terminate(job_id)
            client.wait(job_id, lambda d: d.state in JOB_TERMINAL, timeout=args.timeout)
            return elapsed

        sample("ssh"), sample("local")  # warm-up: the worker's first tasks import everything, connect to the node
        for _ in range(args.jobs):
            for name in samples:
                samples[name].append(sample(name))
    finally:
        if stack is not None:
            stack.stop()
        sshconn.close_all()
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)

    print(f"network: {'namespaces' if cluster.bridge else 'loopback'}")
    print(f"{'submit->VNC login':<24}{'n':>4}{'p50 s':>9}{'p90 s':>9}{'max s':>9}")
    for name, values in samples.items():
        print(f"{name + ' head node':<24}{len(values):>4}{percentile(values, 50):>9.3f}"
              f"{percentile(values, 90):>9.3f}{max(values):>9.3f}")
    ssh_p50, local_p50 = percentile(samples["ssh"], 50), percentile(samples["local"], 50)
    print(f"ratio p50 ssh / local: {ssh_p50 / local_p50:.2f}x")
    if args.json:
        print(json.dumps({**{f"{k}_s": v for k, v in samples.items()}, "ssh_p50_s": ssh_p50,
                          "local_p50_s": local_p50, "ratio_p50": ssh_p50 / local_p50}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
