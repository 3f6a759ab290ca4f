"""Float vs int8 vs distilled vs pruned, and tuned vs hand-set: the lifecycle verbs on real data.

python -m benchmarks compress [mnist_cnn] [sst2_lstm] [--tune-trials 12]

For each teacher recipe it trains the teacher, then runs `dlab compress` three (CNN: four) ways
and collects the side-by-side rows each compressed run stores (test accuracy, size, CPU latency
at batch 1 and 64, models alternating in one process). For sst2_lstm it also runs the recipe's
tune section and compares the tuned recipe's test accuracy with the hand-set one.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from benchmarks.common import RECIPES, markdown_table, real_data_dir, write_results

STUDENTS = {"mnist_cnn": "mnist_cnn_student", "sst2_lstm": "sst2_lstm_student"}
COLUMNS = ["teacher", "variant", "accuracy", "size_kb", "parameters", "batch1_ms", "batch64_ms"]


def rows_of(teacher: str, compressed) -> list[dict]:
    details = compressed.dir.meta["compression"]
    label = {
        "quantize": details.get("mode"),
        "distill": "distill",
        "prune": f"prune {details.get('amount')}{' structured' if details.get('structured') else ''}",
    }[details["method"]]
    rows = []
    for row in details["comparison"]:
        rows.append(
            {
                "teacher": teacher,
                "method": label,
                "variant": row["model"],
                "accuracy": round(row["accuracy"], 4),
                "size_kb": round(row["size_bytes"] / 1024, 1),
                "parameters": row["parameters"],
                "batch1_ms": round(row["batch1_p50_ms"], 3),
                "batch64_ms": round(row["batch64_p50_ms"], 2),
                "nonzero": details.get("nonzero_weights", ""),
            }
        )
    return rows


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks compress")
    parser.add_argument("teachers", nargs="*", default=list(STUDENTS))
    parser.add_argument("--tune-trials", type=int, default=12)
    options = parser.parse_args(args)
    os.environ["DLAB_DATA_DIR"] = str(real_data_dir())
    import dlab
    from dlab.compress import distill_run, prune_run, quantize_run
    from dlab.recipe import load_recipe
    from dlab.tune import tune

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as runs:
        for name in options.teachers:
            recipe = RECIPES / f"{name}.yaml"
            started = time.perf_counter()
            teacher = dlab.train(recipe, runs_dir=runs, progress=False, report=False)
            print(f"{name}: teacher trained in {time.perf_counter() - started:.0f} s", flush=True)
            done = [
                quantize_run(teacher.path, runs_dir=runs),
                distill_run(
                    teacher.path,
                    RECIPES / f"{STUDENTS[name]}.yaml",
                    runs_dir=runs,
                    progress=False,
                ),
                prune_run(teacher.path, 0.8, runs_dir=runs, progress=False),
            ]
            if teacher.recipe.model.name in ("cnn", "mlp"):
                done.append(
                    prune_run(
                        teacher.path, 0.5, structured_channels=True, runs_dir=runs, progress=False
                    )
                )
            for compressed in done:
                rows += rows_of(name, compressed)
                print(markdown_table(rows_of(name, compressed), ["method", *COLUMNS]), flush=True)
            if load_recipe(recipe).tune is not None:
                started = time.perf_counter()
                result = tune(recipe, trials=options.tune_trials, runs_dir=runs)
                hand = teacher.dir.meta["test"]["accuracy"]
                tuned = result.best_run.dir.meta["test"]["accuracy"]
                rows.append(
                    {
                        "teacher": name,
                        "method": "tune",
                        "variant": f"tuned ({options.tune_trials} trials): {result.best_params}",
                        "accuracy": round(tuned, 4),
                        "hand_set_accuracy": round(hand, 4),
                        "tune_seconds": round(time.perf_counter() - started, 1),
                    }
                )
                print(markdown_table(rows[-1:], list(rows[-1])), flush=True)
    path = write_results("compress", rows, key="teacher")
    print(markdown_table([r for r in rows if r["method"] != "tune"], ["method", *COLUMNS]))
    print(
        markdown_table(
            [r for r in rows if r["method"] == "tune"],
            ["teacher", "variant", "accuracy", "hand_set_accuracy", "tune_seconds"],
        )
    )
    print(f"\nwritten to {path}")
