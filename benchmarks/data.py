"""Data loading: the in-memory index path vs torch's DataLoader, on MNIST, in one process.

    python -m benchmarks data

Two measurements, alternating the paths and taking the median of several repeats:
1. loading alone: one epoch of MNIST training batches (batch 64), nothing else;
2. training the seed MLP for one epoch, where loading is a visible share of each step.
"""

from __future__ import annotations

import os
import statistics
import time

from benchmarks.common import markdown_table, real_data_dir, write_results

PATHS = {
    "memory": {"loader": "memory"},
    "dataloader, 0 workers": {"loader": "workers", "num_workers": 0},
    "dataloader, 2 workers": {"loader": "workers", "num_workers": 2},
}


def main(args: list[str]) -> None:
    os.environ["DLAB_DATA_DIR"] = str(real_data_dir())
    import torch

    from dlab.data import build
    from dlab.models import build as build_model
    from dlab.recipe import from_dict
    from dlab.training.trainer import Trainer

    repeats = int(args[0]) if args else 3
    recipes = {
        name: from_dict(
            {
                "data": {"name": "mnist", "batch_size": 64, **fields},
                "model": {"name": "mlp"},
                "train": {"epochs": 1, "checkpoint_every": 10**9},
            }
        )
        for name, fields in PATHS.items()
    }
    bundles = {name: build(recipe.data) for name, recipe in recipes.items()}
    loading: dict[str, list[float]] = {name: [] for name in PATHS}
    training: dict[str, list[float]] = {name: [] for name in PATHS}
    for _ in range(repeats):
        for name, bundle in bundles.items():  # alternate the paths within each repeat
            started = time.perf_counter()
            seen = sum(len(y) for _, y in bundle.train.epoch(1))
            loading[name].append(seen / (time.perf_counter() - started))
            torch.manual_seed(0)
            trainer = Trainer(
                build_model(recipes[name].model, bundle.meta),
                bundle,
                recipes[name].train,
                progress=False,
            )
            started = time.perf_counter()
            trainer.fit()
            training[name].append(
                trainer.state.samples / (time.perf_counter() - started)
            )  # includes validation
    rows = []
    base_load, base_train = (
        statistics.median(loading["memory"]),
        statistics.median(training["memory"]),
    )
    for name in PATHS:
        load, train = statistics.median(loading[name]), statistics.median(training[name])
        rows.append(
            {
                "path": name,
                "loading samples/s": round(load),
                "loading spread": f"{min(loading[name]):,.0f}-{max(loading[name]):,.0f}",
                "memory ÷ this (loading)": round(base_load / load, 1),
                "MLP training samples/s": round(train),
                "memory ÷ this (training)": round(base_train / train, 2),
            }
        )
    path = write_results("data", rows)
    print(markdown_table(rows, list(rows[0])))
    print(f"\n{repeats} repeats, median; written to {path}")
