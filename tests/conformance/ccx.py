"""CalculiX conformance: every deck of CalculiX's own test suite (Debian calculix-ccx-test) that ccx runs
directly must give a byte-identical .dat through the engine's rendered run.

For each deck: a direct run (`ccx -i <deck>` in a folder holding the deck), then the engine's way: a spec
for the deck, `e2e render` (ControlService.render, the same code path) into a run folder, and the rendered
wrapper.sh run there as the engine's launch runs it (wrapper -> run.sh -> ccx). Both with one OpenMP thread,
so the .dat is deterministic. The .dat files are compared byte for byte (not with the suite's .dat.ref:
those were written by an older ccx).

    python tests/conformance/ccx.py [--jobs 2] [--timeout 300] [--only NAME ...] [--keep DIR]

prints one row per deck (deck, direct ok?, engine identical?, seconds, note) and the totals; exit code 1
when a deck that runs directly differs through the engine.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SUITE = Path("/usr/share/doc/calculix-ccx-test/examples/test")
JOBNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")


@dataclass
class Result:
    deck: str
    direct_ok: bool
    identical: bool | None      # None: not compared (ccx does not run the deck directly)
    seconds: float
    note: str = ""


def suite_decks(suite: Path = SUITE) -> dict[str, Path]:
    """Deck name -> its file (.inp or .inp.gz), for every deck of the suite."""
    decks = {}
    for path in sorted(suite.glob("*.inp*")):
        if path.name.endswith((".inp", ".inp.gz")):
            decks[path.name.split(".inp")[0]] = path
    return decks


def unpack(source: Path, folder: Path, name: str) -> Path:
    """The deck as a plain .inp file named <name>.inp in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.inp"
    data = gzip.decompress(source.read_bytes()) if source.name.endswith(".gz") else source.read_bytes()
    target.write_bytes(data)
    return target


def run_direct(deck: Path, timeout: float) -> tuple[bool, str]:
    """ccx on the deck in its own folder: (ran to 'Job finished' with a .dat, the log's last error)."""
    log = _ccx(deck.parent, deck.stem, timeout)
    dat = deck.with_suffix(".dat")
    return " Job finished" in log and dat.is_file(), _why(log)


def _ccx(folder: Path, jobname: str, timeout: float) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(["ccx", "-i", jobname], cwd=folder, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False)
        return done.stdout.decode("latin-1")
    except subprocess.TimeoutExpired:
        return f"*ERROR timed out after {timeout:.0f} s"


def _why(log: str) -> str:
    errors = [line.strip() for line in log.splitlines() if "*ERROR" in line]
    return errors[-1][:100] if errors else ""


def render_spec(deck: Path, work: Path, jobname: str, extra: dict | None = None) -> Path:
    spec = {"name": f"ccx-{jobname}", "solver": {"name": "calculix", "input": str(deck), "jobname": jobname,
                                                 "threads": 1, **(extra or {})},
            "desktop": {"enabled": False}, "cluster": {"backend": "local", "nodes": 1, "cores_per_node": 1}}
    work.mkdir(parents=True, exist_ok=True)
    path = work / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_engine(deck: Path, work: Path, jobname: str, timeout: float) -> tuple[Path, dict[str, str]]:
    """Render the deck's spec as `e2e render` does and run the wrapper: the run folder and the run's info."""
    from orchestrator.control.service import ControlService
    from orchestrator.model.settings import Settings

    settings = Settings(home=work / "home", redis_url="redis://127.0.0.1:1/0")  # render needs no Redis
    rendered = ControlService(settings).render(render_spec(deck, work, jobname), work / "run", "localhost")
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}
    try:
        subprocess.run(["bash", str(rendered.root / rendered.wrapper)], cwd=rendered.root, env=env,
                       timeout=timeout, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pass
    return rendered.root, dict(rendered.info)


def check_deck(name: str, source: Path, work: Path, timeout: float) -> Result:
    """Run one suite deck directly and through the engine; compare the .dat files."""
    deck = unpack(source, work / "input", name)
    return check_folder(deck, work, timeout)


def check_folder(deck: Path, work: Path, timeout: float) -> Result:
    """Run a deck (with whatever it *INCLUDEs next to it) directly and through the engine; compare the .dat
    files. The direct run gets its own copy of the deck's folder, the engine renders from the original."""
    started = time.monotonic()
    name = deck.stem
    jobname = name if JOBNAME.match(name) else "job_" + re.sub(r"[^A-Za-z0-9_]", "_", name)[:27]
    direct = work / "direct"
    shutil.copytree(deck.parent, direct)
    ok, why = run_direct(direct / deck.name, timeout)
    if not ok:
        return Result(name, False, None, time.monotonic() - started, why or "no .dat / no 'Job finished'")
    try:
        run_dir, info = run_engine(deck, work / "engine", jobname, timeout)
    except Exception as exc:  # a refused render is a failed deck, and the table goes on
        return Result(name, True, False, time.monotonic() - started, f"render failed: {exc}"[:120])
    engine_dat = run_dir / f"{jobname}.dat"
    expected = (direct / deck.name).with_suffix(".dat").read_bytes()
    identical = engine_dat.is_file() and engine_dat.read_bytes() == expected
    note = "restart unavailable: " + _short(info["restart"]) if "restart" in info else ""
    if not identical:
        log = next(iter(sorted(run_dir.glob("ccx-*.log"))), None)
        note = (note + "; " if note else "") + (
            _why(log.read_text(errors="replace")) if log else "no log") + (
            "" if engine_dat.is_file() else " (no .dat)")
    return Result(name, True, identical, time.monotonic() - started, note)


def _short(text: str) -> str:
    return text.split("(", 1)[-1].split(");", 1)[0][:90]


def run_suite(names: list[str] | None, jobs: int, timeout: float, keep: Path | None, out=None) -> list[Result]:
    out = out or sys.stdout
    decks = suite_decks()
    if not decks:
        raise SystemExit(f"no decks under {SUITE}: apt-get install --no-install-recommends calculix-ccx-test")
    chosen = {n: decks[n] for n in (names or decks)}
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="ccx-conformance-", dir=keep))
    results: list[Result] = []
    print(f"{'DECK':24} {'DIRECT':6} {'ENGINE':9} {'SECONDS':>7}  NOTE", file=out, flush=True)

    def one(item: tuple[str, Path]) -> Result:
        result = check_deck(item[0], item[1], root / item[0], timeout)
        engine = "-" if result.identical is None else ("identical" if result.identical else "DIFFERS")
        print(f"{result.deck:24} {'ok' if result.direct_ok else 'no':6} {engine:9} {result.seconds:7.1f}  "
              f"{result.note}", file=out, flush=True)
        if keep is None:
            shutil.rmtree(root / item[0], ignore_errors=True)
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, chosen.items()))
    if keep is None:
        shutil.rmtree(root, ignore_errors=True)
    print(totals(results), file=out, flush=True)
    return results


def totals(results: list[Result]) -> str:
    direct = [r for r in results if r.direct_ok]
    same = [r for r in direct if r.identical]
    unchanged = [r for r in direct if "restart unavailable" in r.note]
    differ = [r.deck for r in direct if not r.identical]
    return (f"TOTAL decks {len(results)}, ccx runs directly {len(direct)}, identical through the engine "
            f"{len(same)} (of them run unchanged, restart unavailable: {len(unchanged)}), differ {len(differ)}"
            + (f": {' '.join(differ)}" if differ else "")
            + f"; {sum(r.seconds for r in results):.0f} s of deck time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="decks run side by side")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per ccx run")
    parser.add_argument("--only", nargs="*", help="these decks only (names without .inp)")
    parser.add_argument("--keep", type=Path, help="keep the run folders under this folder")
    args = parser.parse_args(argv)
    if shutil.which("ccx") is None:
        print("ccx not found: apt-get install calculix-ccx", file=sys.stderr)
        return 2
    results = run_suite(args.only, args.jobs, args.timeout, args.keep)
    return 1 if any(r.direct_ok and not r.identical for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
