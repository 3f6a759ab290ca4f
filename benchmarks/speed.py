"""Time to accuracy: the seed recipe exactly as written vs dlab's fast recipe, as races over
seeds, in one invocation.

python -m benchmarks speed [mnist] [fashion] [gpt] [--max-epochs 8] [--seeds 5]

Every race stops on a validation split carved from the training data (VALIDATION images, the
same for every runner), never on the test split: after each epoch the validation accuracy is
checked, outside the training clock, and the first epoch that reaches the target ends the run.
The test accuracy of that epoch's model is reported beside the time — it is never read to stop
or to tune. Each race runs `--seeds` seeds (airbench's convention): the mean, min and max of the
time to target over the seeds that reached it, the share that did, and the test accuracies.

mnist: wall time of training until MNIST validation accuracy >= 99.0%:
  (a) the seed recipe exactly: the seed CNN, SGD lr 0.01 momentum 0.9, batch 64, a shuffling
      torch DataLoader, the seed's hand-written loop;
  (b) the `mnist_fast` recipe written as a hand loop (the same model, optimizer, schedule,
      label smoothing, bf16 and channels_last, in-memory batches), so that the recipe's share
      of the speed-up and the trainer's show separately;
  (c) the `mnist_fast` recipe through `dlab.train`.
fashion: the same clock to Fashion-MNIST validation accuracy >= 93.0%: the seed recipe, the
  `fashion_mnist_resnet` recipe and the `fashion_mnist_fast` recipe (one seed each: minutes).
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
    with_peak_memory,
    write_results,
)

TARGETS = {"mnist": 0.99, "fashion_mnist": 0.93}  # validation accuracy that ends a race
VALIDATION = 5000  # images carved from the training data to decide when to stop


@functools.cache
def bundle(dataset: str = "mnist"):
    """The data every runner uses: the training images less VALIDATION of them, which decide
    when to stop; the test split is only reported."""
    from dlab.data import build
    from dlab.recipe import from_dict

    recipe = from_dict(
        {"data": {"name": dataset, "val_size": VALIDATION}, "model": {"name": "cnn"}}
    )
    return build(recipe.data, 0)


def test_accuracy(model, test, device: str = "cpu") -> float:
    """Accuracy of `model` on the `test` loader."""
    import torch

    from dlab.training.metrics import predict_all

    with torch.no_grad():
        probabilities, targets = predict_all(model, test, torch.device(device))
    return float((probabilities.argmax(1) == targets).float().mean())


class Race:
    """One run's clock and its checks: `epoch_done(model, seconds)` adds an epoch's training
    time, then checks the validation accuracy (outside the clock) and, when it reaches the
    target, the test accuracy of that same model; True once the run should stop."""

    def __init__(self, data, label: str, device: str, target: float):
        self.data, self.label, self.device, self.target = data, label, device, target
        self.training, self.reached, self.test_at_stop = 0.0, None, None
        self.history: list[float] = []

    def epoch_done(self, model, seconds: float) -> bool:
        self.training += seconds
        accuracy = test_accuracy(model, self.data.val, self.device)
        self.history.append(round(accuracy, 4))
        print(f"  {self.label} epoch {len(self.history)}: validation {accuracy:.4f} after "
              f"{self.training:.2f} s", flush=True)  # fmt: skip
        if accuracy >= self.target and self.reached is None:
            self.reached = self.training
            self.test_at_stop = test_accuracy(model, self.data.test, self.device)
            return True
        return False

    def row(self, run: str, seed: int) -> dict:
        return {
            "run": run,
            "seed": seed,
            "device": self.device,
            "target": f"validation accuracy >= {self.target}",
            "seconds_to_target": round(self.reached, 2) if self.reached else None,
            "epochs": len(self.history),
            "test_accuracy_at_stop": round(self.test_at_stop, 4) if self.test_at_stop else None,
            "per_epoch_validation": self.history,
        }


def seed_recipe(
    max_epochs: int,
    device: str = "cpu",
    max_steps: int | None = None,
    dataset: str = "mnist",
    seed: int = 0,
) -> dict:
    """The seed's code path: DataLoader, SGD(0.01, 0.9), batch 64, the seed CNN (on a GPU the
    seed moves each batch there, as its material does), until the validation target or
    max_epochs."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from dlab.models import build
    from dlab.recipe import from_dict

    data = bundle(dataset)
    x, y = data.train.inputs, data.train.targets
    torch.manual_seed(seed)
    recipe = from_dict({"data": {"name": dataset}, "model": {"name": "cnn"}})
    model = build(recipe.model, data.meta).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    race, steps = Race(data, "seed recipe", device, TARGETS[dataset]), 0
    for _ in range(max_epochs):
        started = time.perf_counter()
        model.train()
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
        if race.epoch_done(model, time.perf_counter() - started) or steps == max_steps:
            break
    suffix = "" if dataset == "mnist" else f" on {dataset}"
    return race.row(f"seed recipe (SGD 0.01, batch 64, DataLoader){suffix}", seed)


def fast_recipe_by_hand(seed: int = 0, device: str = "cpu") -> dict:
    """`mnist_fast` written as a hand loop: its model, SGD with Nesterov momentum and weight
    decay on the weights only, one-cycle, label smoothing 0.1, bf16 autocast, channels_last,
    batch 256 from the in-memory tensors, a shuffle per epoch."""
    import torch
    import torch.nn.functional as F

    from dlab.models import build
    from dlab.recipe import load_recipe
    from dlab.training.optim import param_groups

    recipe = load_recipe(RECIPES / "mnist_fast.yaml")
    data = bundle("mnist")
    x = data.train.inputs.to(device).contiguous(memory_format=torch.channels_last)
    y = data.train.targets.to(device)
    torch.manual_seed(seed)
    model = build(recipe.model, data.meta).to(device, memory_format=torch.channels_last)
    train, batch = recipe.train, recipe.data.batch_size
    sgd = train.optimizer
    optimizer = torch.optim.SGD(
        param_groups(model, sgd), lr=sgd.lr, momentum=sgd.momentum, nesterov=True
    )
    steps_per_epoch = -(-len(x) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=sgd.lr, total_steps=train.epochs * steps_per_epoch, pct_start=0.25
    )
    race = Race(data, "mnist_fast by hand", device, TARGETS["mnist"])
    generator = torch.Generator().manual_seed(seed)
    for _ in range(train.epochs):
        started = time.perf_counter()
        model.train()
        for index in torch.randperm(len(x), generator=generator).to(device).split(batch):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
                loss = F.cross_entropy(model(x[index]), y[index], label_smoothing=0.1)
            loss.backward()
            optimizer.step()
            schedule.step()
        synchronize(device)
        if race.epoch_done(model, time.perf_counter() - started):
            break
    return race.row("mnist_fast.yaml as a hand loop", seed)


def time_to_accuracy(
    recipe: str = "mnist_fast",
    overrides: tuple[str, ...] = (),
    label: str | None = None,
    seed: int = 0,
) -> dict:
    """the recipe RECIPE (with `overrides`, e.g. train.device=cuda) until its data set's
    validation target, or the end of its epochs (its one-cycle schedule spans them).

    The clock adds each epoch's training time as the trainer measures it (CUDA and compile
    warm-up included, validation not); the checks after each epoch are outside it.
    """
    label = label or f"dlab {recipe}.yaml"

    import dlab
    from dlab.training.callbacks import Callback

    class StopOnValidation(Callback):
        def on_fit_start(self, trainer):
            device = str(trainer.device)
            self.race = Race(bundle(trainer.bundle.meta.dataset), label, device,
                             TARGETS[trainer.bundle.meta.dataset])  # fmt: skip

        def on_epoch_end(self, trainer, record):
            if self.race.epoch_done(trainer.model, record["time_s"]):
                trainer.state.stop_reason = f"reached {self.race.target:.1%} on validation"

    stop = StopOnValidation()
    with tempfile.TemporaryDirectory() as runs:
        dlab.train(
            RECIPES / f"{recipe}.yaml",
            [f"data.val_size={VALIDATION}", f"seed={seed}", *overrides],
            runs_dir=runs,
            progress=False,
            report=False,
            evaluate_test=False,
            callbacks=[stop],
        )
    return stop.race.row(label, seed)


def measured(runner, *args, **kwargs) -> dict:
    """One run's row with the peak resident memory of the process while it ran."""
    return with_peak_memory(functools.partial(runner, *args, **kwargs))


def race(label: str, runs: list[dict]) -> dict:
    """The seeds' runs as one row: time to target (mean, min, max over the runs that reached
    it), the share that did, and the test accuracy at the stop (mean, min, max)."""
    times = [r["seconds_to_target"] for r in runs if r["seconds_to_target"] is not None]
    tests = [r["test_accuracy_at_stop"] for r in runs if r["test_accuracy_at_stop"] is not None]
    peaks = [r["peak_rss_mib"] for r in runs if r.get("peak_rss_mib") is not None]
    return {
        "run": label,
        "target": runs[0]["target"],
        "seeds": len(runs),
        "reached": f"{len(times)}/{len(runs)}",
        "mean_seconds": round(sum(times) / len(times), 2) if times else None,
        "min_seconds": min(times, default=None),
        "max_seconds": max(times, default=None),
        "mean_test_accuracy": round(sum(tests) / len(tests), 4) if tests else None,
        "min_test_accuracy": min(tests, default=None),
        "max_test_accuracy": max(tests, default=None),
        "peak_rss_mib": max(peaks, default=None),
        "runs": runs,
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


TABLE = ["run", "target", "seeds", "reached", "mean_seconds", "min_seconds", "max_seconds",
         "mean_test_accuracy", "min_test_accuracy", "peak_rss_mib"]  # fmt: skip


def with_speedup(row: dict, baseline: dict, name: str) -> dict:
    """`row` with `speedup_vs_NAME`: the baseline's mean time to the target over row's (where
    both reached it)."""
    key = "mean_seconds" if "mean_seconds" in row else "seconds_to_target"
    mine, theirs = row[key], baseline[key]
    if mine and theirs:
        row[f"speedup_vs_{name}"] = round(theirs / mine, 2)
    return row


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks speed")
    parser.add_argument("suites", nargs="*", default=["mnist", "fashion", "gpt"])
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=5, help="seeds per race (MNIST)")
    options = parser.parse_args(args)
    os.environ["DLAB_DATA_DIR"] = str(real_data_dir())
    rows, seeds = [], range(options.seeds)
    if "mnist" in options.suites:
        fast = race("dlab mnist_fast.yaml",
                    [measured(time_to_accuracy, "mnist_fast", seed=s) for s in seeds])  # fmt: skip
        by_hand = race("mnist_fast.yaml as a hand loop",
                       [measured(fast_recipe_by_hand, s) for s in seeds])  # fmt: skip
        seed = race("seed recipe",
                    [measured(seed_recipe, options.max_epochs, seed=s) for s in seeds])  # fmt: skip
        rows += [seed, with_speedup(by_hand, seed, "seed"), with_speedup(fast, seed, "seed")]
        with_speedup(fast, by_hand, "hand_loop")
        print(markdown_table(rows[-3:], [*TABLE, "speedup_vs_seed", "speedup_vs_hand_loop"]))
    if "fashion" in options.suites:
        fast = race("dlab fashion_mnist_fast.yaml",
                    [measured(time_to_accuracy, "fashion_mnist_fast")])  # fmt: skip
        resnet = race("dlab fashion_mnist_resnet.yaml",
                      [measured(time_to_accuracy, "fashion_mnist_resnet")])  # fmt: skip
        seed = race("seed recipe on fashion_mnist",
                    [measured(seed_recipe, options.max_epochs, dataset="fashion_mnist")])  # fmt: skip
        rows += [seed, resnet, with_speedup(with_speedup(fast, seed, "seed"), resnet, "resnet")]
        print(markdown_table(rows[-3:], [*TABLE, "speedup_vs_resnet", "speedup_vs_seed"]))
    if "gpt" in options.suites:
        rows.append(char_gpt())
        print(markdown_table(rows[-1:], ["run", "val_loss", "train_seconds", "steps", "target"]))
        print(rows[-1]["sample"])
    path = write_results("speed", rows, key="run")
    print(f"\nwritten to {path}")
