"""`python -m benchmarks SUITE [ARGS]`: run one benchmark suite."""

from __future__ import annotations

import sys

SUITES = {
    "accuracy": "benchmarks.accuracy",
    "compress": "benchmarks.compress",
    "data": "benchmarks.data",
    "overhead": "benchmarks.overhead",
    "serve": "benchmarks.serve",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in SUITES:
        raise SystemExit(f"usage: python -m benchmarks {{{','.join(SUITES)}}} [args]")
    import importlib

    importlib.import_module(SUITES[sys.argv[1]]).main(sys.argv[2:])


main()
