"""Benchmark: the ssh backend's command round trip and file transfer against raw ssh/rsync, in the same run.

Starts the test cluster (tests/integration/sshcluster.py: sshd on 127.0.0.x by default, or one network
namespace per node with --network netns) and measures, one at a time:
  * round trip of `true`: backend.run (kept paramiko connection, TCP_NODELAY), a bare paramiko channel on
    a kept transport (the floor), OpenSSH `ssh` with a fresh connection, and `ssh` over a ControlMaster;
  * a file of --size MiB: backend.write_bytes / read_bytes (SFTP) against `ssh node 'cat > f'` / `cat f`;
  * a directory (--files small files + the big file): push_tree through the backend (rsync, then the SFTP
    fallback) against a raw `rsync -a -e ssh`.
Prints p50/p95 and ratios, and whether the target holds (backend per-command p50 <= 5 ms). Exits 0 whatever
the figures; non-zero only on errors.

    .venv/bin/python bench/ssh.py [--commands 300] [--size 64] [--files 500] [--network loopback|netns]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.cluster import sshconn  # noqa: E402
from orchestrator.cluster.ssh import SSHBackend  # noqa: E402
from orchestrator.cluster.transfer import push_tree, ssh_command  # noqa: E402
from orchestrator.model.settings import Settings  # noqa: E402
from tests.integration.sshcluster import NodeCluster  # noqa: E402

TARGET_P50_MS = 5.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commands", type=int, default=300, help="timed round trips per method (default 300)")
    p.add_argument("--fresh", type=int, default=20, help="timed fresh-connection ssh runs (default 20)")
    p.add_argument("--size", type=int, default=64, help="MiB of the transferred file (default 64)")
    p.add_argument("--files", type=int, default=500, help="small files in the transferred tree (default 500)")
    p.add_argument("--network", choices=["loopback", "netns"], default="loopback")
    return p.parse_args()


def timed(fn, n: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(label: str, samples: list[float]) -> float:
    p50 = statistics.median(samples)
    print(f"  {label:<44} p50 {p50:8.2f} ms   p95 {pct(samples, 0.95):8.2f} ms   n={len(samples)}")
    return p50


def once(label: str, fn, mib: float | None = None) -> float:
    start = time.perf_counter()
    fn()
    secs = time.perf_counter() - start
    rate = f"   {mib / secs:8.1f} MiB/s" if mib else ""
    print(f"  {label:<44} {secs * 1000:8.1f} ms{rate}")
    return secs


def main() -> None:
    args = parse_args()
    base = Path(tempfile.mkdtemp(prefix="e2essh-bench-"))
    cluster = NodeCluster(base, network=args.network)
    try:
        cluster.start()
        backend = SSHBackend(Settings(home=base / "home", inventory=cluster.inventory(), _env_file=None))
        node = backend.inventory()[0]
        spec = backend.spec(node)
        ssh = ssh_command(backend, node)
        print(f"node {node.name} at {spec.address}:{spec.port} ({args.network}); "
              f"cores {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")

        print("command round trip (`true`):")
        ours = row("backend.run (kept connection)", timed(lambda: backend.run(node, ["true"]), args.commands))
        transport = backend.conn(node).transport(time.monotonic() + 10)

        def bare():
            chan = transport.open_session()
            chan.exec_command("true")
            chan.recv_exit_status()
            chan.close()
        floor = row("bare paramiko channel (floor)", timed(bare, args.commands))
        fresh = row("ssh, new connection each time", timed(
            lambda: subprocess.run([*ssh, spec.address, "true"], check=True), args.fresh, warmup=1))
        control = base / "cm.sock"
        master = [*ssh, "-o", "ControlMaster=auto", "-o", f"ControlPath={control}", "-o", "ControlPersist=60"]
        muxed = row("ssh over a ControlMaster", timed(
            lambda: subprocess.run([*master, spec.address, "true"], check=True), args.commands))
        subprocess.run([*master, "-O", "exit", spec.address], capture_output=True)
        print(f"  backend overhead over the floor: {ours - floor:+.2f} ms; ssh/backend {fresh / ours:.1f}x, "
              f"ssh-ControlMaster/backend {muxed / ours:.1f}x")
        print(f"  target backend p50 <= {TARGET_P50_MS:g} ms: {'MET' if ours <= TARGET_P50_MS else 'MISSED'} "
              f"({ours:.2f} ms)")

        print(f"file of {args.size} MiB:")
        data = os.urandom(args.size << 20)
        src = base / "big.bin"
        src.write_bytes(data)
        remote = base / "remote"
        remote.mkdir()
        put = once("backend.write_bytes (SFTP)", lambda: backend.write_bytes(node, remote / "a.bin", data), args.size)
        get = once("backend.read_bytes (SFTP)", lambda: backend.read_bytes(node, remote / "a.bin"), args.size)
        with open(src, "rb") as fh:
            raw_put = once("ssh 'cat > f'", lambda: subprocess.run(
                [*ssh, spec.address, f"cat > {shlex.quote(str(remote / 'b.bin'))}"], stdin=fh, check=True), args.size)
        raw_get = once("ssh 'cat f'", lambda: subprocess.run(
            [*ssh, spec.address, f"cat {shlex.quote(str(remote / 'b.bin'))}"], capture_output=True, check=True),
            args.size)
        print(f"  backend/ssh time ratio: write {put / raw_put:.2f}, read {get / raw_get:.2f}")

        print(f"directory ({args.files} small files + the {args.size} MiB file):")
        tree = base / "tree"
        for i in range(args.files):
            (tree / f"d{i % 20}").mkdir(parents=True, exist_ok=True)
            (tree / f"d{i % 20}" / f"f{i}").write_bytes(os.urandom(512 + (i * 37) % 8000))
        shutil.copy(src, tree / "big.bin")
        total = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file()) / (1 << 20)
        ours_rsync = once("backend push_tree (rsync)", lambda: push_tree(backend, node, tree, base / "t1"), total)
        raw_rsync = once("rsync -a -e ssh", lambda: subprocess.run(
            ["rsync", "-a", "-e", shlex.join(ssh), f"{tree}/", f"{spec.address}:{base / 't2'}/"], check=True), total)
        import orchestrator.cluster.transfer as transfer

        usable, transfer.rsync_usable = transfer.rsync_usable, lambda *a: False
        try:
            sftp = once("backend push_tree (SFTP fallback)", lambda: push_tree(backend, node, tree, base / "t3"), total)
        finally:
            transfer.rsync_usable = usable
        print(f"  backend-rsync/rsync {ours_rsync / raw_rsync:.2f}x, SFTP fallback/rsync {sftp / raw_rsync:.2f}x")
    finally:
        sshconn.close_all()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
