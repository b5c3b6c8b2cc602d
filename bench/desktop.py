"""Benchmark: submit -> a VNC client logged in to the job's desktop, against starting Xvnc directly.

Starts a private engine (orchestrator.worker.stack.Stack, embedded Redis) in a temporary E2E_HOME. Then, N times,
interleaved and one at a time:
  * desktop: time.time() just before Client.submit() of a `sleep` job with the desktop on -> the moment this
    process completes a VncAuth login (orchestrator.desktop.rfb) with the session password, polling the job
    record for the desktop's port; the job is then terminated outside the timed window;
  * Xvnc alone: Popen of Xvnc (same options as the session: -displayfd, -localhost, VncAuth) -> the first
    VncAuth login that succeeds; then Xvnc is stopped.
Then (bench/desktop_paraview.py, --paraview-samples N) submit of an OpenFOAM job -> ParaView in its session showing
the case, beside the same Xvnc-alone baseline; and (bench/desktop_panel.py, --panel-samples N) the job panel's
Pause click -> run PAUSED, beside `e2e pause --wait` through the same API (served here, at the address the desktops
are given).
Prints p50/p90/max of each, the ratios, and whether the targets (desktop p50 <= 3 s, ParaView p50 <= 10 s, panel
p50 <= 1 s) hold.
Exit 0 whatever the figures; non-zero only on errors.

    .venv/bin/python bench/desktop.py --jobs 10 [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_P50_S = 3.0
TARGET_PANEL_P50_S = 1.0  # the panel's Pause click -> run PAUSED
TARGET_PARAVIEW_P50_S = 10.0  # submit -> ParaView showing the case


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def login_until(port_of, password_of, timeout: float) -> None:
    """Poll until a VncAuth login succeeds; port_of/password_of return None while not known yet."""
    from orchestrator.desktop.rfb import RFBError, authenticate

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        port, password = port_of(), password_of()
        if port and password:
            try:
                authenticate("127.0.0.1", port, password, timeout=2)
                return
            except (OSError, RFBError):
                pass
        time.sleep(0.005)
    raise RuntimeError(f"no VNC login within {timeout:.0f}s")


def xvnc_sample(folder: Path, timeout: float) -> float:
    """Xvnc started by hand, as the session script does -> first successful login."""
    from orchestrator.desktop.vncauth import passwd_file
    from orchestrator.worker.stack import free_port

    (folder / "passwd").write_bytes(passwd_file("bench123"))
    port = free_port()
    started = time.time()
    with open(folder / "display", "w") as display, open(folder / "xvnc.log", "ab") as log:
        proc = subprocess.Popen(["Xvnc", "-displayfd", str(display.fileno()), "-rfbport", str(port), "-localhost",
                                 "-rfbauth", str(folder / "passwd"), "-SecurityTypes", "VncAuth",
                                 "-geometry", "1280x800", "-depth", "24"],
                                pass_fds=(display.fileno(),), stdout=log, stderr=log)
    try:
        login_until(lambda: port, lambda: "bench123", timeout)
        return time.time() - started
    finally:
        proc.terminate()
        proc.wait(10)


def desktop_bench_args(doc: str, jobs: int, what: str, flag: str = "--jobs",
                       panel: int = 0) -> argparse.Namespace | None:
    """The desktop benches' options (the sample count under `flag`; with panel, --panel-samples too); None
    (after saying why) when Xvnc is missing."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument(flag, type=int, default=jobs, help=f"timed samples of {what} (default {jobs})")
    if panel:
        p.add_argument("--panel-samples", type=int, default=panel,
                       help=f"panel Pause clicks and `e2e pause --wait` runs, each (default {panel}; 0: none)")
        p.add_argument("--paraview-samples", type=int, default=3,
                       help="OpenFOAM submits timed until ParaView shows the case (default 3; 0: none)")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if not shutil.which("Xvnc"):
        print("Xvnc is not installed (apt-get install --no-install-recommends tigervnc-standalone-server "
              "xfonts-base openbox xterm novnc websockify)", file=sys.stderr)
        return None
    return args


def main() -> int:
    args = desktop_bench_args(__doc__, 10, "each", panel=5)
    if args is None:
        return 2
    home = Path(tempfile.mkdtemp(prefix="e2e-bench-desktop-"))
    os.environ["E2E_HOME"] = str(home)
    for var in ("REDIS_URL", "E2E_REDIS_URL"):
        os.environ.pop(var, None)
    sys.path.insert(0, str(ROOT))
    from bench.desktop_panel import missing, pause_figures
    from bench.desktop_paraview import missing as paraview_missing_here
    from bench.desktop_paraview import paraview_figures
    from orchestrator.control.client import Client
    from orchestrator.desktop.secrets import DesktopSecrets
    from orchestrator.desktop.service import desktop_record
    from orchestrator.model.settings import Settings
    from orchestrator.model.states import JOB_TERMINAL
    from orchestrator.worker.stack import Stack, free_port

    # api_port: where the API is served below, and where the desktops' panels reach it (their E2E_SERVER)
    settings = Settings(home=home, local_nodes=2, local_cores_per_node=1, api_port=free_port())
    stack = Stack(settings)
    desktop_s, xvnc_s = [], []
    pauses: dict[str, list[float]] = {}
    panel_missing = missing() if args.panel_samples else "--panel-samples 0"
    paraview_missing = paraview_missing_here() if args.paraview_samples else "--paraview-samples 0"
    paraview_s: list[float] = []
    try:
        stack.start()
        client = Client(settings, user="bench")
        spec = {"name": "bench-desktop", "solver": {"name": "command", "command": ["sleep", "600"]}}

        def desktop_sample() -> float:
            started = time.time()
            job_id = client.submit_data(spec)
            secrets = DesktopSecrets(client.store)
            port = lambda: desktop_record(client.store.get_job(job_id)).vnc_port  # noqa: E731
            password = lambda: (secrets.read(job_id) or None) and secrets.read(job_id).password  # noqa: E731
            login_until(port, password, args.timeout)
            elapsed = time.time() - started
            client.terminate(job_id)
            client.wait(job_id, lambda d: d.state in JOB_TERMINAL, timeout=args.timeout)
            return elapsed

        scratch = home / "xvnc"
        scratch.mkdir()
        desktop_sample()  # warm-up: the worker's first task imports everything
        for _ in range(args.jobs):
            desktop_s.append(desktop_sample())
            xvnc_s.append(xvnc_sample(scratch, args.timeout))
        if not paraview_missing:
            paraview_s = paraview_figures(client, args.paraview_samples, args.timeout)
        if not panel_missing:
            from bench.desktop_latency import serve_api

            server, _ = serve_api(settings, settings.api_port)
            # a root engine runs no job as root: the bench user's jobs run as the suite's job account, if any
            run_as = os.environ.get("E2E_RUN_AS") or ("e2e-jobs" if os.geteuid() == 0 else "")
            token = client.store.users.create("bench", os_user=run_as)
            pauses = pause_figures(client, settings.resolved_api_url(), token, args.panel_samples, args.timeout)
            server.should_exit = True
    finally:
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)

    rows = [(name, values) for name, values in (("submit->VNC login", desktop_s), ("Xvnc->VNC login", xvnc_s),
                                                ("submit->ParaView", paraview_s),
                                                ("panel Pause->PAUSED", pauses.get("panel")),
                                                ("e2e pause --wait", pauses.get("cli"))) if values]
    print(f"{'metric':<19}{'n':>4}{'p50 s':>9}{'p90 s':>9}{'max s':>9}")
    for name, values in rows:
        print(f"{name:<19}{len(values):>4}{percentile(values, 50):>9.3f}{percentile(values, 90):>9.3f}"
              f"{max(values):>9.3f}")
    p50, base = percentile(desktop_s, 50), percentile(xvnc_s, 50)
    print(f"ratio p50 submit->login / Xvnc alone: {p50 / base:.1f}x (reconcile every "
          f"{settings.reconcile_interval:g}s)")
    print(f"target p50 <= {TARGET_P50_S:g} s: {'holds' if p50 <= TARGET_P50_S else 'MISSED'} ({p50:.3f} s)")
    paraview_p50 = percentile(paraview_s, 50) if paraview_s else None
    if paraview_p50 is None:
        print(f"submit->ParaView: not measured ({paraview_missing})")
    else:
        print(f"target submit->ParaView showing the case p50 <= {TARGET_PARAVIEW_P50_S:g} s: "
              f"{'holds' if paraview_p50 <= TARGET_PARAVIEW_P50_S else 'MISSED'} ({paraview_p50:.3f} s; "
              f"{paraview_p50 / base:.1f}x Xvnc alone)")
    panel_p50 = percentile(pauses["panel"], 50) if pauses.get("panel") else None
    if panel_p50 is None:
        print(f"panel Pause->PAUSED: not measured ({panel_missing})")
    else:
        print(f"target panel Pause->PAUSED p50 <= {TARGET_PANEL_P50_S:g} s: "
              f"{'holds' if panel_p50 <= TARGET_PANEL_P50_S else 'MISSED'} ({panel_p50:.3f} s; "
              f"e2e pause --wait {percentile(pauses['cli'], 50):.3f} s)")
    if args.json:
        print(json.dumps({"desktop_s": desktop_s, "xvnc_s": xvnc_s, "p50_s": p50, "xvnc_p50_s": base,
                          "ratio_p50": p50 / base, "target_p50_le_3s": p50 <= TARGET_P50_S,
                          "panel_pause_s": pauses.get("panel"), "cli_pause_s": pauses.get("cli"),
                          "panel_pause_p50_s": panel_p50, "paraview_s": paraview_s,
                          "paraview_p50_s": paraview_p50}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
