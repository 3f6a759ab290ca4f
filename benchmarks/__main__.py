"""`python -m benchmarks SUITE [ARGS]`: run one benchmark suite."""

from __future__ import annotations

import sys

SUITES = {
    "accuracy": "benchmarks.accuracy",
    "cifar": "benchmarks.cifar",
    "clustering": "benchmarks.clustering",
    "compress": "benchmarks.compress",
    "data": "benchmarks.data",
    "gpu": "benchmarks.gpu",
    "inference": "benchmarks.inference",
    "overhead": "benchmarks.overhead",
    "recommend": "benchmarks.recommend",
    "scale": "benchmarks.scale",
    "scaling": "benchmarks.scaling",
    "serve": "benchmarks.serve",
    "serve_load": "benchmarks.serve_load",
    "speed": "benchmarks.speed",
    "tabular": "benchmarks.tabular",
    "threads": "benchmarks.hardware:main_threads",
    "utilisation": "benchmarks.hardware:main_utilisation",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in SUITES:
        raise SystemExit(f"usage: python -m benchmarks {{{','.join(SUITES)}}} [args]")
    import importlib

    module, _, function = SUITES[sys.argv[1]].partition(":")
    getattr(importlib.import_module(module), function or "main")(sys.argv[2:])


main()
