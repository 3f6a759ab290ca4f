"""Time to accuracy: the seed recipe exactly as written vs dlab's fast recipe, in one invocation.

python -m benchmarks speed [mnist] [fashion] [gpt] [--max-epochs 8]

mnist: wall time of training until MNIST test accuracy >= 99.0%, test accuracy checked after
  every epoch (the checks are not counted as training time, for either side):
  (a) the seed recipe exactly: the seed CNN, SGD lr 0.01 momentum 0.9, batch 64, a shuffling
      torch DataLoader, the seed's hand-written loop;
  (b) the `mnist_fast` recipe through `dlab.train` (a small batch-norm CNN, one-cycle, label
      smoothing, batch 256, in-memory batches; see the recipe for what each switch is worth).
fashion: the same clock to Fashion-MNIST test accuracy >= 93.0%: the seed recipe on Fashion-MNIST,
  the `fashion_mnist_resnet` recipe (dlab's accuracy recipe, float32) and
  the `fashion_mnist_fast` recipe.
gpt: the `shakespeare_char_gpt` recipe (nanoGPT's reduced CPU configuration): validation loss
  and the training time it took, against the 1.88-in-3-minutes anchor; with a generated sample.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time

from benchmarks.common import (
    RECIPES,
    markdown_table,
    real_data_dir,
    synchronize,
    write_results,
)

TARGETS = {"mnist": 0.99, "fashion_mnist": 0.93}  # test accuracy


@functools.cache
def bundle(dataset: str = "mnist"):
    """The data the seed recipe uses (all the training images; the test split checks)."""
    from dlab.data import build
    from dlab.recipe import from_dict

    recipe = from_dict({"data": {"name": dataset, "val_size": 0}, "model": {"name": "cnn"}})
    return build(recipe.data, 0)


def test_accuracy(model, test, device: str = "cpu") -> float:
    """Accuracy of `model` on the `test` loader."""
    import torch

    from dlab.training.metrics import predict_all

    with torch.no_grad():
        probabilities, targets = predict_all(model, test, torch.device(device))
    return float((probabilities.argmax(1) == targets).float().mean())


def seed_recipe(
    max_epochs: int, device: str = "cpu", max_steps: int | None = None, dataset: str = "mnist"
) -> dict:
    """The seed's code path: DataLoader, SGD(0.01, 0.9), batch 64, the seed CNN (on a GPU the
    seed moves each batch there, as its material does), until TARGETS[dataset] or max_epochs."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from dlab.models import build
    from dlab.recipe import from_dict

    data, target = bundle(dataset), TARGETS[dataset]
    x, y = data.train.inputs, data.train.targets
    torch.manual_seed(0)
    recipe = from_dict({"data": {"name": dataset}, "model": {"name": "cnn"}})
    model = build(recipe.model, data.meta).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    training, reached, history, steps = 0.0, None, [], 0
    for epoch in range(1, max_epochs + 1):
        started = time.perf_counter()
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(inputs), targets)
            loss.backward()
            optimizer.step()
            steps += 1
            if steps == max_steps:
                break
        synchronize(device)
        training += time.perf_counter() - started
        accuracy = test_accuracy(model, data.test, device)
        history.append(round(accuracy, 4))
        print(f"  seed recipe epoch {epoch}: {accuracy:.4f} after {training:.1f} s", flush=True)
        if accuracy >= target:  # the same test as time_to_accuracy's, on the unrounded value
            reached = training
            break
        if steps == max_steps:
            break
    return {
        "run": "seed recipe (SGD 0.01, batch 64, DataLoader)"
        + ("" if dataset == "mnist" else f" on {dataset}"),
        "device": device,
        "target": f"test accuracy >= {target}",
        "seconds_to_target": round(reached, 1) if reached else None,
        "epochs": len(history),
        "test_accuracy": history[-1],
        "best_test_accuracy": max(history),
        "per_epoch": history,
    }


def time_to_accuracy(
    recipe: str = "mnist_fast", overrides: tuple[str, ...] = (), label: str | None = None
) -> dict:
    """the recipe RECIPE (with `overrides`, e.g. train.device=cuda) until its data set's
    TARGETS test accuracy, or the end of its epochs (its one-cycle schedule spans them).

    The clock runs from the start of fit (CUDA and compile warm-up included) to the end of the
    epoch that reached it; the test-accuracy checks after each epoch are outside it.
    """
    label = label or f"dlab {recipe}.yaml"

    import dlab
    from dlab.training.callbacks import Callback

    class StopAt99(Callback):
        """Checks test accuracy after each epoch, outside the training clock."""

        def __init__(self):
            self.history, self.training, self.reached = [], 0.0, None
            self.started = None

        def on_fit_start(self, trainer):
            self.device = str(trainer.device)
            self.target = TARGETS[trainer.bundle.meta.dataset]
            self.started = time.perf_counter()

        def on_epoch_end(self, trainer, record):
            synchronize(self.device)
            self.training += time.perf_counter() - self.started
            accuracy = test_accuracy(trainer.model, trainer.bundle.test, self.device)
            self.history.append(round(accuracy, 4))
            print(
                f"  {label} epoch {len(self.history)}: {accuracy:.4f} after {self.training:.2f} s",
                flush=True,
            )
            if accuracy >= self.target and self.reached is None:
                self.reached = self.training
                trainer.state.stop_reason = f"reached {self.target:.1%}"
            self.started = time.perf_counter()

    stop = StopAt99()
    with tempfile.TemporaryDirectory() as runs:
        dlab.train(
            RECIPES / f"{recipe}.yaml",
            list(overrides),
            runs_dir=runs,
            progress=False,
            report=False,
            evaluate_test=False,
            callbacks=[stop],
        )
    return {
        "run": label,
        "device": stop.device,
        "target": f"test accuracy >= {stop.target}",
        "seconds_to_target": round(stop.reached, 1) if stop.reached else None,
        "epochs": len(stop.history),
        "test_accuracy": stop.history[-1],
        "best_test_accuracy": max(stop.history),
        "per_epoch": stop.history,
    }


def char_gpt() -> dict:
    import dlab

    with tempfile.TemporaryDirectory() as runs:
        run = dlab.train(
            RECIPES / "shakespeare_char_gpt.yaml",
            runs_dir=runs,
            progress=False,
            report=False,
        )
        meta = run.dir.meta
        sample = run.generate("ROMEO:", 300, temperature=0.8, top_k=40, seed=0)
    return {
        "run": "dlab shakespeare_char_gpt.yaml (nanoGPT CPU config)",
        "val_loss": round(meta["evaluation"]["val"]["loss"], 4),
        "train_seconds": meta["train_seconds"],
        "steps": meta["steps"],
        "target": "val loss <= 1.88 within 180 s",
        "sample": "ROMEO:" + sample,
    }


TABLE = ["run", "target", "seconds_to_target", "epochs", "test_accuracy", "best_test_accuracy"]


def with_speedup(row: dict, baseline: dict, name: str) -> dict:
    """`row` with `speedup_vs_NAME`: the baseline's time to the target over row's (where both
    reached it)."""
    mine, theirs = row["seconds_to_target"], baseline["seconds_to_target"]
    if mine and theirs:
        row[f"speedup_vs_{name}"] = round(theirs / mine, 2)
    return row


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks speed")
    parser.add_argument("suites", nargs="*", default=["mnist", "fashion", "gpt"])
    parser.add_argument("--max-epochs", type=int, default=8)
    options = parser.parse_args(args)
    os.environ["DLAB_DATA_DIR"] = str(real_data_dir())
    rows = []
    if "mnist" in options.suites:
        fast = time_to_accuracy("mnist_fast")
        seed = seed_recipe(options.max_epochs)
        rows += [seed, with_speedup(fast, seed, "seed")]
        print(markdown_table(rows[-2:], [*TABLE, "speedup_vs_seed"]))
    if "fashion" in options.suites:
        fast = time_to_accuracy("fashion_mnist_fast")
        resnet = time_to_accuracy("fashion_mnist_resnet")
        seed = seed_recipe(options.max_epochs, dataset="fashion_mnist")
        rows += [seed, resnet, with_speedup(with_speedup(fast, seed, "seed"), resnet, "resnet")]
        print(markdown_table(rows[-3:], [*TABLE, "speedup_vs_resnet", "speedup_vs_seed"]))
    if "gpt" in options.suites:
        rows.append(char_gpt())
        print(markdown_table(rows[-1:], ["run", "val_loss", "train_seconds", "steps", "target"]))
        print(rows[-1]["sample"])
    path = write_results("speed", rows, key="run")
    print(f"\nwritten to {path}")
