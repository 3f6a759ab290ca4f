"""Accuracy of the shipped recipes on the real data sets, with wall time and throughput.

python -m benchmarks accuracy [RECIPE ...]      # default: mnist_cnn mnist_mlp
"""

from __future__ import annotations

import os
import tempfile
import time

from benchmarks.common import ROOT, markdown_table, real_data_dir, write_results

TARGETS = {"mnist_cnn": 0.990, "mnist_mlp": 0.975}


def run(recipes: list[str]) -> list[dict]:
    """Train each recipe into a temporary runs folder and report its test accuracy."""
    os.environ["DLAB_DATA_DIR"] = str(real_data_dir())
    import dlab

    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for name in recipes or list(TARGETS):
            started = time.perf_counter()
            result = dlab.train(ROOT / "recipes" / f"{name}.yaml", runs_dir=runs, progress=False)
            meta = result.dir.meta
            rows.append(
                {
                    "recipe": name,
                    "test_accuracy": meta["test"]["accuracy"],
                    "target": TARGETS.get(name, ""),
                    "train_seconds": meta["train_seconds"],
                    "samples_per_s": meta["samples_per_s"],
                    "wall_seconds": round(time.perf_counter() - started, 1),
                    "epochs": meta["epochs"],
                    "threads": meta["hardware"]["threads"],
                }
            )
            print(markdown_table(rows[-1:], list(rows[-1])), flush=True)
    return rows


def main(args: list[str]) -> None:
    rows = run(args)
    path = write_results("accuracy", rows)
    print(markdown_table(rows, list(rows[0])))
    print(f"\nwritten to {path}")
