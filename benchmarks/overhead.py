"""Trainer overhead: dlab's trainer vs a hand-written loop vs PyTorch Lightning, in one process.

python -m benchmarks overhead [--repeats 7] [--scale 1.0]

The same model (one initial copy), the same in-memory data, the same batch size, optimizer and
number of steps. Each repeat runs every runner once, in an order shuffled per repeat (so no
runner always follows the same one), and a ratio is the median over the repeats of that repeat's
own ratio, with its spread (min-max): a drift of the machine's speed hits both sides of a
repeat alike. The hand loop runs twice per repeat: `hand / hand again`, a ratio that should be
1, is the measurement's own noise, against which dlab's ratio is read. Every runner uses the
thread count dlab chooses for that model (`threads: auto`), so the ratio measures the loop, not
the thread policy; `python -m benchmarks threads` measures the policy.

- hand loop: what a competent engineer writes — zero_grad, forward, loss, backward, step, over
  tensor slices of a shuffled index already in memory on the device (no DataLoader, which would
  only slow it down), no per-step synchronisation, and Adam in the fastest implementation torch
  has for this model on this device (fused or foreach, whichever `fastest_adam` measures faster);
- dlab: `dlab.fit(model, (x, y), ...)` — the Trainer with its metrics, NaN guard and logging, no
  run folder (its Adam is fused where torch has the kernel);
- Lightning: `lightning.Trainer` with logging, checkpoints, progress bar and model summary off,
  given the hand loop's Adam and its data placement: whole batches of the in-memory tensors,
  drawn through a batch sampler (install it with `pip install 'dlab[bench]'`; rows are skipped
  with a note where it is missing).
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

from benchmarks.common import markdown_table, real_data_dir, synchronize, write_results


def workloads(scale: float) -> dict[str, dict]:
    """name -> model factory, inputs, targets, batch size and steps (about 2-5 s per run here)."""
    import torch

    from dlab.data import build
    from dlab.models import build as build_model
    from dlab.models.examples import example_meta
    from dlab.recipe import from_dict

    os.environ.setdefault("DLAB_DATA_DIR", str(real_data_dir()))
    mnist = build(
        from_dict({"data": {"name": "mnist", "loader": "memory"}, "model": {"name": "mlp"}}).data, 0
    )
    images, labels = mnist.train.inputs[:8192], mnist.train.targets[:8192]
    generator = torch.Generator().manual_seed(0)

    def model(name: str, meta=None, **fields):
        def make():
            torch.manual_seed(0)
            recipe = from_dict({"data": {"name": "mnist"}, "model": {"name": name, **fields}})
            return build_model(recipe.model, meta or mnist.meta)

        return make

    text_meta = replace(
        example_meta("lstm"), input_shape=(64,), details={"vocab_size": 10_000, "pad_id": None}
    )
    gpt_meta = replace(
        example_meta("gpt"), input_shape=(64,), details={"vocab_size": 65, "block_size": 64}
    )
    tokens = torch.randint(1, 10_000, (4096, 64), generator=generator)
    chars = torch.randint(0, 65, (4096, 65), generator=generator)

    def steps(n: int) -> int:
        return max(10, int(n * scale))

    return {
        "seed MLP (MNIST)": dict(
            make=model("mlp"), x=images, y=labels, batch=64, steps=steps(1200)
        ),
        "seed CNN (MNIST)": dict(make=model("cnn"), x=images, y=labels, batch=64, steps=steps(120)),
        "LSTM text classifier": dict(
            make=model("lstm", text_meta, embedding=64, hidden=128, layers=1),
            x=tokens,
            y=torch.randint(0, 2, (4096,), generator=generator),
            batch=32,
            steps=steps(150),
        ),
        "GPT (nanoGPT CPU config)": dict(
            make=model("gpt", gpt_meta, layers=4, heads=4, d_model=128, dropout=0.0),
            x=chars[:, :-1],
            y=chars[:, 1:],
            batch=12,
            steps=steps(200),
        ),
    }


def fastest_adam(model, device: str, trials: int = 30) -> dict:
    """The Adam options (fused or foreach) that step this model's parameters fastest here:
    timed on a copy with fixed gradients, best of three, so a baseline never runs the slow
    default (on CPU, torch.optim.Adam is neither fused nor foreach unless asked)."""
    import torch

    timings = {}
    for options in ({"fused": True}, {"foreach": True}):
        trial = copy.deepcopy(model).to(device)
        for parameter in trial.parameters():
            parameter.grad = torch.randn_like(parameter)
        try:
            optimizer = torch.optim.Adam(trial.parameters(), lr=1e-3, **options)
            optimizer.step()
        except (RuntimeError, TypeError, ValueError):
            continue  # this torch has no such kernel for this device
        best = float("inf")
        for _ in range(3):
            synchronize(device)
            started = time.perf_counter()
            for _ in range(trials):
                optimizer.step()
            synchronize(device)
            best = min(best, time.perf_counter() - started)
        timings[next(iter(options))] = best
    choice = min(timings, key=timings.get) if timings else None
    return {choice: True} if choice else {}


def hand_loop(model, x, y, batch: int, steps: int, adam: dict) -> None:
    import torch
    import torch.nn.functional as F

    model.to(x.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, **adam)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).to(x.device)
    model.train()
    done = 0
    while done < steps:
        for start in range(0, len(x) - batch + 1, batch):
            index = order[start : start + batch]
            optimizer.zero_grad()
            output = model(x[index])
            loss = F.cross_entropy(output.reshape(-1, output.shape[-1]), y[index].reshape(-1))
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    loss.item()  # wait for the last step, as the others do


def dlab_fit(model, x, y, batch: int, steps: int, threads: int) -> None:
    import dlab

    # the data is where the hand loop has it; dlab trains on that device

    dlab.fit(
        model,
        (x, y),
        optimizer="adam",
        lr=1e-3,
        epochs=1 + steps * batch // len(x),
        batch_size=batch,
        max_steps=steps,
        progress=False,
        threads=threads,
        device=str(x.device),
    )


class Batches:
    """A dataset whose items are whole batches: `dataset[indices]` is (x[indices], y[indices]),
    sliced from the in-memory tensors where they already are (the hand loop's placement)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, indices):
        return self.x[indices], self.y[indices]


def lightning_fit(model, x, y, batch: int, steps: int, adam: dict) -> None:
    import lightning
    import torch
    import torch.nn.functional as F
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler

    class Module(lightning.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def training_step(self, data, index):
            inputs, targets = data
            output = self.net(inputs)
            return F.cross_entropy(output.reshape(-1, output.shape[-1]), targets.reshape(-1))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3, **adam)

    trainer = lightning.Trainer(
        max_steps=steps,
        accelerator=x.device.type,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    # the hand loop's placement: the tensors stay where they are, each batch is one slice
    sampler = BatchSampler(RandomSampler(range(len(x))), batch_size=batch, drop_last=True)
    loader = DataLoader(Batches(x, y), sampler=sampler, batch_size=None)
    trainer.fit(Module(model), loader)


def paired(numerators: list[float], denominators: list[float]) -> list[float]:
    """Each repeat's own ratio (the runs of one repeat ran minutes apart at most)."""
    return [a / b for a, b in zip(numerators, denominators, strict=False)]  # [] without Lightning


def measure(scale: float, repeats: int, device: str = "cpu") -> list[dict]:
    """One row per workload: samples/s of each runner (median, spread) and dlab's ratios."""
    import logging
    import warnings

    import torch

    from dlab import runtime

    try:
        import lightning

        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module="lightning")
    except ImportError:
        lightning = None
        print("lightning is not installed (pip install 'dlab[bench]'): its column is skipped")

    rows = []
    for name, job in workloads(scale).items():
        x, y, batch, steps = job["x"].to(device), job["y"].to(device), job["batch"], job["steps"]
        initial = job["make"]()
        threads = (
            # as the trainer chooses for a run this long: the fastest count, timed on one batch
            runtime.choose_threads(
                "auto",
                runtime.count_forward_flops(initial, x[:batch].cpu()),
                runtime.time_threads(initial, x[:batch].cpu()),  # leaves it as it was
            )
            if x.device.type == "cpu"
            else torch.get_num_threads()
        )
        common = {"x": x, "y": y, "batch": batch, "steps": steps}
        torch.set_num_threads(threads)
        adam = fastest_adam(initial, device)
        runners: dict[str, Callable] = {
            "hand loop": partial(hand_loop, **common, adam=adam),
            "hand loop again": partial(hand_loop, **common, adam=adam),  # the noise control
            "dlab": partial(dlab_fit, **common, threads=threads),
        }
        if lightning is not None:
            runners["Lightning"] = partial(lightning_fit, **common, adam=adam)
        rates: dict[str, list[float]] = {k: [] for k in runners}
        peaks: dict[str, list[float]] = {k: [] for k in runners}
        for runner in runners.values():  # warm-up: first-call costs paid before timing
            torch.set_num_threads(threads)
            runner(copy.deepcopy(initial))
        shuffler = random.Random(0)
        for _ in range(repeats):
            order = list(runners)
            shuffler.shuffle(order)
            for label in order:
                runner = runners[label]
                model = copy.deepcopy(initial)
                torch.set_num_threads(threads)
                runtime.reset_peak_memory()  # outside the clock, as the reading after it
                synchronize(device)
                started = time.perf_counter()
                runner(model)
                synchronize(device)
                rates[label].append(steps * batch / (time.perf_counter() - started))
                peaks[label].append(runtime.resident_peak_mib() or 0.0)
        row = {
            "model": name,
            "device": device,
            "threads": threads,
            "batch": batch,
            "steps": steps,
            "baseline Adam": ", ".join(adam) or "default",
        }
        for label, values in rates.items():
            row[f"{label} samples/s"] = round(statistics.median(values), 1)
            row[f"{label} spread"] = f"{min(values):.0f}-{max(values):.0f}"
            row[f"{label} peak_rss_mib"] = max(peaks[label])  # the process's, data included
        for label, ratio in (
            ("dlab / hand", paired(rates["dlab"], rates["hand loop"])),
            ("hand / hand again", paired(rates["hand loop"], rates["hand loop again"])),
            ("dlab / Lightning", paired(rates["dlab"], rates.get("Lightning", []))),
        ):
            if ratio:
                row[label] = round(statistics.median(ratio), 3)
                row[f"{label} spread"] = f"{min(ratio):.3f}-{max(ratio):.3f}"
        rows.append(row)
        print(markdown_table([row], list(row)), flush=True)
    return rows


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks overhead")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count")
    options = parser.parse_args(args)
    rows = measure(options.scale, options.repeats)
    path = write_results("overhead", rows, key="model")
    print(markdown_table(rows, list(rows[0])))
    print(f"\nwritten to {path}")
