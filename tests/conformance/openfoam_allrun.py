"""How many of the shipped OpenFOAM tutorials' Allruns derive into steps, and why the others are refused.

    python tests/conformance/openfoam_allrun.py [--root DIR] [--verbose]

Every folder holding an Allrun (or only an Allrun.pre) and a system/controlDict is a case: its steps are derived
as at submit (solvers.openfoam_allrun.derive, with the controlDict's application). Prints the counts and the
most common reasons for refusal (the first word of the refused line). Exit status 0.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from solvers.openfoam import read_entry  # noqa: E402
from solvers.openfoam_allrun import AllrunError, allrun_of, derive  # noqa: E402

ROOT = Path("/usr/share/doc/openfoam-examples/examples")


def survey(root: Path) -> tuple[list[tuple[Path, int]], list[tuple[Path, AllrunError]], list[Path]]:
    derived, refused, not_cases = [], [], []
    scripts = sorted({p.parent for p in root.rglob("Allrun")} | {p.parent for p in root.rglob("Allrun.pre")})
    for case in scripts:
        control = case / "system" / "controlDict"
        if not control.is_file() or allrun_of(case) is None:
            not_cases.append(case)  # a driver script over several cases (foamRunTutorials)
            continue
        application = read_entry(control.read_text(errors="replace"), "application") or ""
        try:
            found = derive(case, application)
        except AllrunError as exc:
            refused.append((case, exc))
            continue
        derived.append((case, len(found.steps) if found else 0))
    return derived, refused, not_cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--verbose", action="store_true", help="print every case and its refusal")
    args = parser.parse_args()
    if not args.root.is_dir():
        print(f"{args.root}: not installed (apt-get install openfoam-examples)")
        return 0
    derived, refused, not_cases = survey(args.root)
    total = len(derived) + len(refused)
    print(f"{total} cases with an Allrun (or Allrun.pre) and a controlDict under {args.root}")
    print(f"  derived cleanly: {len(derived)}")
    print(f"  refused:         {len(refused)}")
    print(f"  ({len(not_cases)} more Allruns drive several cases and have no controlDict beside them)")
    kinds = collections.Counter(exc.line.split()[0] if exc.line.split() else "(no solver line)" for _, exc in refused)
    print("refused lines, by first word: " + ", ".join(f"{w} {n}" for w, n in kinds.most_common(12)))
    if args.verbose:
        for case, count in derived:
            print(f"OK  {case.relative_to(args.root)}: {count} steps")
        for case, exc in refused:
            print(f"NO  {case.relative_to(args.root)}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
