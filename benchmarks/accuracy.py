"""Accuracy of the shipped recipes on the real data sets, with wall time and throughput.

python -m benchmarks accuracy [RECIPE ...]      # default: mnist_cnn mnist_mlp
"""

from __future__ import annotations

import os
import tempfile
import time

from benchmarks.common import RECIPES, markdown_table, real_data_dir, write_results

TARGETS = {
    "mnist_cnn": ("accuracy", ">= 0.990"),
    "mnist_mlp": ("accuracy", ">= 0.975"),
    "fashion_mnist_resnet": ("accuracy", ">= 0.93"),
    "cifar10_lenet": ("accuracy", "> 0.54 (tutorial, 2 epochs)"),
    "sst2_lstm": ("accuracy", ">= 0.78"),
    "sst2_transformer": ("accuracy", ">= 0.78"),
    "multi30k_transformer": ("bleu", "30-35 for from-scratch models"),
    "shakespeare_char_gpt": ("loss", "<= 1.88 (nanoGPT CPU config)"),
    "sunspots_gru": ("mae", "< naive_mae"),
    "scenes_centernet": ("map50", ">= 0.90 in under 20 min on 2 CPU cores"),
    "scenes_unet": ("miou", ">= 0.85 in under 20 min on 2 CPU cores"),
    "aerial_trees_centernet": ("map50", "held-out tiles of real aerial photos"),
}
HEADLINE = {
    "classification": "accuracy",
    "language_model": "loss",
    "seq2seq": "bleu",
    "regression": "mae",
    "detection": "map50",
    "segmentation": "miou",
}


def overrides(name: str) -> list[str]:
    """What a recipe needs on this machine: the aerial photos are the files inside deepforest."""
    if name != "aerial_trees_centernet":
        return []
    import importlib.util

    spec = importlib.util.find_spec("deepforest")  # found, never imported
    if spec is None:
        raise SystemExit("aerial_trees_centernet reads deepforest's photos: run make first")
    return [f"data.path={os.path.join(spec.submodule_search_locations[0], 'data')}"]


def run(recipes: list[str]) -> list[dict]:
    """Train each recipe into a temporary runs folder and report its headline metric."""
    os.environ["DLAB_DATA_DIR"] = str(real_data_dir())
    import dlab

    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for name in recipes or ["mnist_cnn", "mnist_mlp"]:
            started = time.perf_counter()
            recipe = RECIPES / f"{name}.yaml"
            result = dlab.train(recipe, overrides(name), runs_dir=runs, progress=False)
            meta = result.dir.meta
            task = meta["data"]["task"]
            split, report = next(iter(reversed(meta["evaluation"].items())))
            metric = HEADLINE[task]
            rows.append(
                {
                    "recipe": name,
                    "model": result.recipe.model.name,
                    "data": result.recipe.data.name,
                    "split": split,
                    "metric": metric,
                    "value": round(report[metric], 4),
                    "target": TARGETS.get(name, ("", ""))[1],
                    "naive_mae": round(report["naive_mae"], 3) if "naive_mae" in report else "",
                    "parameters": meta["parameters"],
                    "trainable": meta.get("trainable_parameters", meta["parameters"]),
                    "train_seconds": meta["train_seconds"],
                    "samples_per_s": meta["samples_per_s"],
                    "wall_seconds": round(time.perf_counter() - started, 1),
                    "epochs": meta["epochs"],
                    "steps": meta["steps"],
                    "threads": meta["hardware"]["threads"],
                    "sample": report.get("sample", "")[:400],
                }
            )
            print(markdown_table(rows[-1:], [c for c in rows[-1] if c != "sample"]), flush=True)
    return rows


def main(args: list[str]) -> None:
    rows = run(args)
    path = write_results("accuracy", rows, key="recipe")
    print(markdown_table(rows, [c for c in rows[0] if c != "sample"]))
    print(f"\nwritten to {path}")
