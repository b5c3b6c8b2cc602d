"""Benchmark: the live sync's transfers against rsync on the same data in the same run, and write-to-visible lag.

(a) one 500 MB random file, (b) 5,000 files of 0.5-8 KB in 50 folders, (c) a re-sync with nothing changed,
as a full rescan and (c') as the sync process meets it (inotify reported nothing: an empty dirty set),
(d) 1 MB appended to the 500 MB file (and the bytes each tool wrote), all run-dir -> work-folder on this
machine; ours is one SyncPair pass (orchestrator/sync/engine.py), rsync is `rsync -a` (and, for (d),
`--inplace --no-whole-file` and `--append-verify`, the fast local variants; the ratio is against the fastest).
Each case is repeated --repeat times alternating the tools; medians are compared.
(e) a real sync process (python -m orchestrator.sync.daemon) while a writer makes a new file every 200 ms:
time from the writer's close() to the complete file being visible in the work folder, p50/p99.
Data lives under a temporary folder in /tmp and is deleted afterwards. Exits 0 whatever the figures.

    .venv/bin/python bench/sync.py [--big-mb 500] [--small 5000] [--repeat 5] [--latency-files 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.model.paths import JobPaths
from orchestrator.sync.engine import SyncPair
from orchestrator.sync.tree import LocalSide

RATIO_TARGET, APPEND_BYTES_TARGET, P50_TARGET, P99_TARGET = 1.25, 2 << 20, 0.5, 1.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--big-mb", type=int, default=500)
    p.add_argument("--small", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--latency-files", type=int, default=100)
    p.add_argument("--json", action="store_true")
    return p.parse_args()


class Ours:
    """One SyncPair per destination, its state kept between passes like the daemon's."""

    def __init__(self, src: Path, dst: Path, state: Path) -> None:
        self.pair = SyncPair("bench", LocalSide(src), LocalSide(dst), state, lambda *_: None, quiet=0.0)

    def run(self, dirty: set[str] | None = None) -> tuple[float, int]:
        """One pass; `dirty`: the folders inotify reported changed, as the daemon hands them (None: a full
        rescan, the daemon's safety net every few seconds)."""
        t0 = time.perf_counter()
        result = self.pair.sync_once(final=True, dirty=dirty)
        return time.perf_counter() - t0, result.bytes


def rsync(src: Path, dst: Path, *extra: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(["rsync", "-a", "--stats", *extra, f"{src}/", f"{dst}/"], capture_output=True, text=True,
                          check=True)
    elapsed = time.perf_counter() - t0
    literal = re.search(r"Literal data: ([\d,.]+)", proc.stdout)
    return elapsed, int(literal.group(1).replace(",", "").replace(".", "")) if literal else -1


def make_small(root: Path, count: int, rng: random.Random) -> None:
    for i in range(count):
        folder = root / f"dir{i % 50:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:05d}.dat").write_bytes(rng.randbytes(rng.randint(512, 8192)))


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def case(name: str, rounds: int, ours_fn, rsync_fns: dict) -> dict:
    """Alternate the tools `rounds` times; medians of time, and bytes written."""
    times = {"ours": [], **{k: [] for k in rsync_fns}}
    sent = {k: 0 for k in times}
    for r in range(rounds):
        order = [("ours", ours_fn), *rsync_fns.items()]
        if r % 2:
            order.reverse()
        for label, fn in order:
            t, b = fn(r)
            times[label].append(t)
            sent[label] = b
    med = {k: statistics.median(v) for k, v in times.items()}
    best = min((k for k in med if k != "ours"), key=med.get)
    return {"case": name, "ours_s": med["ours"], "rsync_s": med[best], "rsync_variant": best,
            "ratio": med["ours"] / med[best], "ours_bytes": sent["ours"], "rsync_bytes": sent[best],
            "all_s": med}


def bench_transfers(base: Path, args) -> list[dict]:
    rng = random.Random(7)
    src = base / "src"
    src.mkdir()
    big = src / "big.bin"
    with open(big, "wb") as fh:
        fh.writelines(os.urandom(1 << 20) for _ in range(args.big_mb))
    results = []
    ours_dst, rs_dst, state = base / "ours", base / "rsync", base / "state.json"

    def ours_full(_r):
        fresh(ours_dst)
        state.unlink(missing_ok=True)
        return Ours(src, ours_dst, state).run()

    def rsync_full(_r):
        return rsync(src, fresh(rs_dst))
    results.append(case(f"(a) one {args.big_mb} MB file", args.repeat, ours_full, {"rsync -a": rsync_full}))
    big.rename(base / "big.bin.aside")
    make_small(src, args.small, rng)
    results.append(case(f"(b) {args.small} small files", args.repeat, ours_full, {"rsync -a": rsync_full}))
    (base / "big.bin.aside").rename(big)
    # (c) and (d) start from both destinations in step with the source (big file + small files)
    fresh(ours_dst)
    state.unlink(missing_ok=True)
    ours = Ours(src, ours_dst, state)
    ours.run()
    rsync(src, fresh(rs_dst))
    results.append(case("(c) re-sync, nothing changed", args.repeat, lambda _r: ours.run(),
                        {"rsync -a": lambda _r: rsync(src, rs_dst)}))
    # (c') the same as the sync process meets it: inotify reported no change, so its pass lists nothing (the full
    # rescan of (c) is its safety net, every RESCAN seconds); rsync, told nothing, must look at everything
    results.append(case("(c') re-sync, nothing changed, watched", args.repeat, lambda _r: ours.run(dirty=set()),
                        {"rsync -a": lambda _r: rsync(src, rs_dst)}))
    variants = {"rsync -a": (), "rsync --inplace --no-whole-file": ("--inplace", "--no-whole-file"),
                "rsync --append-verify": ("--append-verify",)}
    dests = {k: base / f"rsync-{i}" for i, k in enumerate(variants)}
    for k in variants:
        rsync(src, fresh(dests[k]))
    appended = {"n": -1}

    def grow(r):
        if appended["n"] < r:  # one new MB per round, seen by every tool
            with open(big, "ab") as fh:
                fh.write(os.urandom(1 << 20))
            appended["n"] = r

    def ours_append(r):
        grow(r)
        return ours.run()

    rs = {k: (lambda r, k=k: (grow(r), rsync(src, dests[k], *variants[k]))[1]) for k in variants}
    results.append(case("(d) 1 MB appended to the big file", args.repeat, ours_append, rs))
    for k in variants:
        assert (dests[k] / "big.bin").read_bytes() == big.read_bytes(), k
    assert (ours_dst / "big.bin").stat().st_size == big.stat().st_size
    return results


def bench_latency(base: Path, files: int, write=None, daemon_args: tuple[str, ...] = (),
                  case: str = "(e) write-to-visible lag") -> dict:
    """A real daemon; a writer thread closes a new file every 200 ms; poll the work folder every 2 ms.
    `write(path, data)` writes one file atomically (default: here; the remote case: on an ssh node)."""
    job = JobPaths(base / "job")
    run = job.run("run-001").root
    run.mkdir(parents=True)
    job.sync.root.mkdir(parents=True)
    write = write or _write_local
    daemon = subprocess.Popen([sys.executable, "-m", "orchestrator.sync.daemon", "--job-dir", str(job.root),
                               *daemon_args],
                              cwd=Path(__file__).resolve().parent.parent, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    closed: dict[int, float] = {}
    try:
        deadline = time.monotonic() + 20
        while not (job.sync.pid.exists() and job.work.is_dir()) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)  # watches in place

        def writer():
            for i in range(files):
                write(run / f"out-{i:04d}.dat", os.urandom(64 << 10))
                closed[i] = time.time()
                time.sleep(0.2)
        thread = threading.Thread(target=writer)
        thread.start()
        visible: dict[int, float] = {}
        work = job.work_of("run-001")
        stop_at = time.monotonic() + files * 0.2 + 30
        while len(visible) < files and time.monotonic() < stop_at:
            now = time.time()
            for i in list(closed):
                if i not in visible:
                    try:
                        if (work / f"out-{i:04d}.dat").stat().st_size == 64 << 10:
                            visible[i] = now
                    except FileNotFoundError:
                        pass
            time.sleep(0.002)
        thread.join()
        with open(f"/proc/{daemon.pid}/stat") as fh:
            ticks = fh.read().rsplit(")", 1)[1].split()
        cpu = (int(ticks[11]) + int(ticks[12])) / os.sysconf("SC_CLK_TCK")
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(10)
    lags = sorted(visible[i] - closed[i] for i in visible)
    pick = (lambda q: lags[min(len(lags) - 1, int(q * (len(lags) - 1) + 0.5))]) if lags else (lambda q: float("nan"))
    return {"case": case, "files": files, "seen": len(lags), "daemon_cpu_s": cpu,
            "writer_s": files * 0.2,
            "p50_s": pick(0.5), "p99_s": pick(0.99), "max_s": lags[-1] if lags else float("nan")}


def _write_local(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
    with open(path.parent / "log.solver", "a") as fh:
        fh.write(f"{path.name}\n")


def bench_remote_latency(base: Path, files: int) -> dict | None:
    """(e) with the run directory on an ssh node that does not share storage with this host (the namespace
    test cluster: root and sshd needed); the writer writes on the node over SFTP (temp + rename)."""
    try:
        from tests.integration.sshcluster import NodeCluster, sshd_available
    except ImportError:
        return None
    if os.geteuid() != 0 or not sshd_available():
        print("(e) remote: skipped (needs root and sshd for the namespace test cluster)", file=sys.stderr)
        return None
    from orchestrator.cluster import sshconn
    from orchestrator.cluster.ssh import SSHBackend
    from orchestrator.model.settings import Settings

    base.mkdir(parents=True)
    shared = base / "private"
    shared.mkdir()
    cluster = NodeCluster(base / "cluster", private=[shared])
    try:
        cluster.start()
        inventory = cluster.inventory(base / "inventory.yaml", shared_storage=False)
        backend = SSHBackend(Settings(home=base, inventory=inventory))
        node = next(n for n in backend.inventory() if n.name == "nodea")
        backend.run(node, ["mkdir", "-p", "--", JobPaths(shared / "job").run("run-001").root])
        return bench_latency(shared, files, write=lambda path, data: backend.write_bytes(node, path, data),
                             daemon_args=("--node", "nodea", "--inventory", str(inventory)),
                             case="(e) remote write-to-visible lag")
    finally:
        sshconn.close_all()
        cluster.stop()


def main() -> int:
    args = parse_args()
    if shutil.which("rsync") is None:
        print("rsync is not installed (apt-get install rsync): no baseline", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="e2e-sync-bench-", dir="/tmp"))
    try:
        results = bench_transfers(base, args)
        latency = bench_latency(base / "lat", args.latency_files)
        remote = bench_remote_latency(base / "remote", args.latency_files)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{'case':38} {'ours':>9} {'rsync':>9} {'ratio':>6}  {'ours bytes':>12} {'rsync bytes':>12}  baseline")
    for r in results:
        ok = "ok" if r["ratio"] <= RATIO_TARGET else "MISSED"
        print(f"{r['case']:38} {r['ours_s']:8.3f}s {r['rsync_s']:8.3f}s {r['ratio']:5.2f}x  "
              f"{r['ours_bytes']:12,} {r['rsync_bytes']:12,}  {r['rsync_variant']} [{ok} <= {RATIO_TARGET}x]")
        if len(r["all_s"]) > 2:
            print("    " + ", ".join(f"{k} {v:.3f}s" for k, v in r["all_s"].items()))
    appended = results[-1]["ours_bytes"]
    print(f"(d) bytes written by ours: {appended:,} [{'ok' if appended <= APPEND_BYTES_TARGET else 'MISSED'} "
          f"<= {APPEND_BYTES_TARGET:,}]")
    print(f"(e) write-to-visible over {latency['seen']}/{latency['files']} files: p50 {latency['p50_s'] * 1000:.0f} ms "
          f"[{'ok' if latency['p50_s'] <= P50_TARGET else 'MISSED'} <= {P50_TARGET * 1000:.0f}], "
          f"p99 {latency['p99_s'] * 1000:.0f} ms [{'ok' if latency['p99_s'] <= P99_TARGET else 'MISSED'} "
          f"<= {P99_TARGET * 1000:.0f}], max {latency['max_s'] * 1000:.0f} ms; sync process CPU "
          f"{latency['daemon_cpu_s']:.2f}s over the writer's {latency['writer_s']:.0f}s")
    if remote is not None:
        print(f"(e) remote (ssh node, own disk) over {remote['seen']}/{remote['files']} files: p50 "
              f"{remote['p50_s'] * 1000:.0f} ms [{'ok' if remote['p50_s'] <= P50_TARGET else 'MISSED'} <= "
              f"{P50_TARGET * 1000:.0f}], p99 {remote['p99_s'] * 1000:.0f} ms "
              f"[{'ok' if remote['p99_s'] <= P99_TARGET else 'MISSED'} <= {P99_TARGET * 1000:.0f}], max "
              f"{remote['max_s'] * 1000:.0f} ms; sync process CPU {remote['daemon_cpu_s']:.2f}s")
    if args.json:
        print(json.dumps({"transfers": results, "latency": latency, "remote_latency": remote}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
