"""Scaling: training speed and peak memory as the batch and the model's width grow (CNN, GPT).

python -m benchmarks scaling [cnn] [gpt] [--device cpu] [--seconds 2]

Each cell (model, width, batch) trains in a process of its own, so its peak resident memory
(Linux's VmHWM) is its own: `peak_rss_mib` is the process's peak, `training_mib` its growth over
what the process held before the first step (torch, the model, the data): the activations kept
for the backward pass, the gradients, Adam's state and the allocator's slack. On a GPU,
`cuda_peak_mib` is `torch.cuda.max_memory_allocated` over the timed training.

- cnn: dlab's `cnn` on MNIST-shaped images, channels [w, 2w], one pool, fc 128;
- gpt: dlab's `gpt`, 4 layers, 4 heads, d_model w, blocks of 64 characters of a 65-symbol
  vocabulary (the nanoGPT CPU configuration is w = 128).

The inputs are random tensors of those shapes: neither the speed nor the memory depends on the
values. Every cell runs `dlab.fit` (Adam, fp32) on all usable cores, so the cells compare sizes
and not thread policies; samples/s is over a fit of about `--seconds` (at least 16 steps) after
a short warm-up fit, timed as the trainer clocks its epochs (its setup is not in them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from benchmarks.common import ROOT, markdown_table, write_results

GRID = {
    "cnn": {"widths": [16, 32, 64], "batches": [32, 128, 512]},
    "gpt": {"widths": [64, 128, 256], "batches": [8, 32, 128]},
}
MIN_STEPS = 16  # two epochs of the cell's 8 batches, however slow a step is
COLUMNS = [
    "model",
    "width",
    "batch",
    "parameters",
    "threads",
    "steps",
    "samples_per_s",
    "peak_rss_mib",
    "training_mib",
    "cuda_peak_mib",
]


def build_cell(model: str, width: int, batch: int) -> tuple[Any, Any, Any]:
    """The model (seeded) and random inputs and targets for 8 batches of the cell's shapes."""
    from dataclasses import replace

    import torch

    from dlab.models import build
    from dlab.models.examples import example_meta
    from dlab.recipe import from_dict

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    n = 8 * batch
    if model == "cnn":
        meta = example_meta("cnn")
        spec = {"name": "cnn", "channels": [width, 2 * width], "hidden": 128}
        x = torch.randn(n, *meta.input_shape, generator=generator)
        y = torch.randint(0, meta.num_classes, (n,), generator=generator)
    elif model == "gpt":
        meta = replace(
            example_meta("gpt"), input_shape=(64,), details={"vocab_size": 65, "block_size": 64}
        )
        spec = {"name": "gpt", "layers": 4, "heads": 4, "d_model": width, "dropout": 0.0}
        chars = torch.randint(0, 65, (n, 65), generator=generator)
        x, y = chars[:, :-1], chars[:, 1:]
    else:
        raise SystemExit(f"scaling: no model {model!r} (choose from {', '.join(GRID)})")
    net = build(from_dict({"data": {"name": "mnist"}, "model": spec}).model, meta)
    return net, x, y


def cell(model: str, width: int, batch: int, seconds: float, device: str) -> dict[str, Any]:
    """Train one cell in this process and measure it (run it in a fresh process: see `run_cell`)."""
    import torch

    import dlab
    from dlab import runtime
    from dlab.models import count_parameters

    net, x, y = build_cell(model, width, batch)
    threads = runtime.usable_cores()

    def fit(steps: int, size: int = batch) -> float:
        """Seconds of training, as the trainer clocks its epochs (its setup is not in them)."""
        history = dlab.fit(
            net,
            (x, y),
            lr=1e-3,
            epochs=steps,
            max_steps=steps,
            batch_size=size,
            progress=False,
            threads=threads,
            device=device,
        )
        return sum(record["time_s"] for record in history.records)

    fit(1, size=1)  # what any fit loads (modules, kernels) is in the baseline, not the training
    before_mib = runtime.resident_peak_mib() or 0.0  # own peak: see runtime.resident_peak_mib
    per_step = fit(3) / 3  # warm-up at the cell's size, and the length of the timed fit
    steps = max(MIN_STEPS, min(2000, round(seconds / per_step)))
    runtime.reset_peak_memory(torch.device(device))
    elapsed = fit(steps)
    peaks = runtime.peak_memory(torch.device(device))
    return {
        "model": model,
        "width": width,
        "batch": batch,
        "parameters": count_parameters(net),
        "threads": threads,
        "steps": steps,
        "samples_per_s": round(steps * batch / elapsed, 1),
        "peak_rss_mib": peaks.get("peak_rss_mib"),
        "training_mib": round(peaks.get("peak_rss_mib", before_mib) - before_mib, 1),
        "cuda_peak_mib": peaks.get("cuda_peak_allocated_mib", ""),
    }


def run_cell(model: str, width: int, batch: int, seconds: float, device: str) -> dict[str, Any]:
    """`cell` in a fresh process (its peak memory is then its own); a failure (out of memory,
    say) becomes a row that says so."""
    command = [sys.executable, "-m", "benchmarks", "scaling", "--cell"]
    command += [f"{model},{width},{batch}", "--seconds", str(seconds), "--device", device]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return {"model": model, "width": width, "batch": batch, "error": "timed out (600 s)"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": model, "width": width, "batch": batch, "error": last[:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks scaling")
    parser.add_argument("models", nargs="*", help=f"any of {', '.join(GRID)} (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each timed fit")
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # MODEL,WIDTH,BATCH: one cell, as JSON
    options = parser.parse_args(args)
    if options.cell:
        model, width, batch = options.cell.split(",")
        row = cell(model, int(width), int(batch), options.seconds, options.device)
        print(json.dumps(row))
        return
    unknown = sorted(set(options.models) - set(GRID))
    if unknown:
        parser.error(f"no model {', '.join(unknown)} (choose from {', '.join(GRID)})")
    rows = []
    for model in options.models or list(GRID):
        for width in GRID[model]["widths"]:
            for batch in GRID[model]["batches"]:
                row = run_cell(model, width, batch, options.seconds, options.device)
                rows.append(row)
                print(json.dumps(row), flush=True)
    path = write_results("scaling", rows, device=options.device)
    print(markdown_table(rows, [c for c in COLUMNS if any(c in row for row in rows)]))
    print(f"\nwritten to {path}")
