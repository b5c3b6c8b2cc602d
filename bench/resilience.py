"""The resilience report: runs the hardening suites (one pytest subprocess) and prints one table of their rows.

Each suite records one row (suite, cases, passed, figure) through tests/resilience.py into a fresh temporary
folder ($E2E_RESILIENCE_DIR); a suite that fails still shows its row (with passed < cases) when it got as far
as recording, and the exit status says whether every suite passed. E2E_LONG=1 (passed through) runs the long
variants (200 worker kills, 500 queued jobs, a 60 s reconcile stop).

    .venv/bin/python bench/resilience.py [--markdown] [--suite tests/faults/test_load.py ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.resilience import rows  # noqa: E402


def suites() -> list[str]:
    """tests/faults, and every other test file that records a row (e.g. the API's refusal suite)."""
    found = ["tests/faults"]
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith("tests/faults/") and "tests.resilience import" in path.read_text():
            found.append(rel)
    return found


def run_suites(paths: list[str], out: Path) -> tuple[int, float]:
    """pytest over the suites with rows going to `out`; its exit status and the wall time."""
    env = {**os.environ, "E2E_RESILIENCE_DIR": str(out / "rows")}
    started = time.monotonic()
    # A base temp folder of its own: pytest prunes old numbered folders under the shared /tmp/pytest-of-<user>,
    # and another session on the same machine could delete a running engine's home from under it.
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider",
                            f"--basetemp={out / 'pytest'}", *paths], cwd=ROOT, env=env)
    return code, time.monotonic() - started


def table(found: list[dict], markdown: bool) -> str:
    head = ("suite", "cases", "passed", "figure")
    body = [(r["suite"], str(r["cases"]), str(r["passed"]), r["figure"]) for r in found]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(3)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths) + "  {}"
    return "\n".join(fmt.format(*row) for row in [head, *body])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", help="a suite (file or folder) instead of all")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for README)")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="e2e-resilience-"))
    code, seconds = run_suites(args.suite or suites(), out)
    found = rows(out / "rows") if (out / "rows").is_dir() else []
    if code == 0:
        shutil.rmtree(out, ignore_errors=True)
    else:
        print(f"\nkept for a look: {out} (pytest's folders: engine homes with their logs)")
    variant = "long" if os.environ.get("E2E_LONG") == "1" else "short (CI)"
    print(f"\nResilience, {variant} variant, {time.strftime('%Y-%m-%d', time.gmtime())}, {seconds:.0f}s:\n")
    print(table(found, args.markdown) if found else "(no suite recorded a row)")
    return code


if __name__ == "__main__":
    sys.exit(main())
