"""Mutation scores per file from a `mutmut run` (what `make mutation` prints at the end).

    python tests/mutation_scores.py mutants [--target 0.85]

A file's score is the share of its mutants that the tests noticed: killed, timed out (a mutant
that loops forever is noticed too) or a crash. Mutants no test reaches count against it, like
survivors; mutants left unchecked (an interrupted run) are shown but not scored. Exits 1 when a
fully checked file scores below the target.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

# mutmut 3's exit codes, grouped (mutmut/stats.py names each of them)
NOTICED = {1: "killed", 3: "killed", -24: "timeout", 24: "timeout", 36: "timeout", 152: "timeout",
           255: "timeout", -11: "crash", -9: "crash", 37: "killed"}  # fmt: skip
MISSED = {0: "survived", 5: "no tests", 33: "no tests", 35: "suspicious"}
UNCHECKED = {None: "not checked", 2: "interrupted", 34: "skipped"}


def outcomes(meta_file: Path) -> Counter:
    codes = json.loads(meta_file.read_text())["exit_code_by_key"].values()
    tally: Counter = Counter()
    for code in codes:
        if code in NOTICED:
            tally["noticed"] += 1
        elif code in UNCHECKED:
            tally["unchecked"] += 1
        else:
            tally[MISSED.get(code, "survived")] += 1
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mutants", type=Path, help="the mutants/ folder mutmut wrote")
    parser.add_argument("--target", type=float, default=0.85)
    args = parser.parse_args(argv)
    files = sorted(args.mutants.rglob("*.py.meta"))
    if not files:
        print(f"{args.mutants}: no mutmut results (run `make mutation` first)", file=sys.stderr)
        return 2
    below = []
    print(f"{'file':42} {'mutants':>7} {'noticed':>7} {'survived':>8} {'no tests':>8} "
          f"{'unchecked':>9} {'score':>6}")  # fmt: skip
    for meta_file in files:
        tally = outcomes(meta_file)
        scored = sum(tally.values()) - tally["unchecked"]
        if not sum(tally.values()):
            continue
        score = tally["noticed"] / scored if scored else float("nan")
        name = str(meta_file.relative_to(args.mutants)).removesuffix(".meta")
        print(f"{name:42} {sum(tally.values()):7d} {tally['noticed']:7d} {tally['survived']:8d} "
              f"{tally['no tests']:8d} {tally['unchecked']:9d} {score:6.1%}")  # fmt: skip
        if scored and not tally["unchecked"] and score < args.target:
            below.append(name)
    if below:
        print(f"below {args.target:.0%}: {', '.join(below)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
