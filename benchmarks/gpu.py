"""The GPU suite: the CPU suites' rows on a CUDA device, plus the two public GPU anchors.

python -m benchmarks gpu [SECTION ...] [--device cuda] [--repeats 3] [--smoke]

SECTION (default: all, in this order):
  peak         float32 and bfloat16 matmul FLOP/s (8192²), the ceiling for `utilisation`
  overhead     hand loop vs dlab vs Lightning on the device (`benchmarks/overhead.py`'s models,
               data already on the device for the hand loop and dlab; Lightning's own DataLoader)
  mnist        time to 99.0% MNIST test accuracy: the seed recipe moved to the GPU, and
               the `mnist_fast` recipe on the GPU, eager and compiled (anchor: 0.76 s,
               tuomaso/train_mnist_fast); target < 1 s on an H100
  gpt          time to validation loss 1.47 on Tiny Shakespeare with nanoGPT's full GPU
               configuration (the `shakespeare_char_gpt_gpu` recipe), eager and compiled
               (anchor: 1.4697 after 5000 steps, about 3 min on an A100); target < 60 s on an H100
  utilisation  achieved training FLOP/s of mnist_fast and the GPU GPT / the matmul peak
  inference    the seed CNN at batch 1 and 64: eager float32, eager bf16, torch.compile, and
               torch.compile with CUDA graphs ("reduce-overhead"): p50/p99 and inputs/s

Every timing waits for the device's work (torch.cuda.synchronize) before reading the clock.
Time-to-target runs: one cold run first (CUDA start, cuDNN autotuning, compilation: reported as
`cold_seconds`), then `--repeats` warm runs in the same process, median and spread reported;
each run's clock stops at the end of the epoch that reached the target, and the test/validation
evaluations are not counted. Results go to benchmarks/results/<host>-<date>-gpu.json.

The real data: set DLAB_DATA_DIR (`mnist/` and `tinyshakespeare/` are all it reads; on a lent
machine copy those two folders into a git-ignored folder of the checkout that travels with it).

`--smoke` runs every section for a few steps on any device and writes nothing: `--device cpu
--smoke` is how the test suite checks this file on machines without a GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

from benchmarks.common import (
    RECIPES,
    markdown_table,
    real_data_dir,
    synchronize,
    write_results,
)

SECTIONS = ("peak", "overhead", "mnist", "gpt", "utilisation", "inference")
GPT_TARGET = 1.47
# a few steps of each section, for checking this file without a GPU
SMOKE_GPT = (
    "data.block_size=32",
    "data.batch_size=8",
    "model.layers=1",
    "model.heads=2",
    "model.d_model=32",
    "train.max_steps=6",
    "train.warmup_steps=2",
    "train.epochs=1",
    "train.compile=false",
)


def peak(device: str, smoke: bool) -> list[dict]:
    import torch

    from benchmarks.hardware import matmul_peak

    size = 256 if smoke else 8192
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        flops = matmul_peak(dtype, size, repeats=3 if smoke else 20, device=device)
        name = str(dtype).removeprefix("torch.")
        rows.append(
            {
                "row": f"peak/{name}",
                "matmul": f"{size}²",
                "dtype": name,
                "TFLOP_s": round(flops / 1e12, 3),
            }
        )
    return rows


def overhead(device: str, repeats: int, smoke: bool) -> list[dict]:
    from benchmarks.overhead import measure

    # a GPU step is ~100x shorter than a CPU one: 4x the CPU suite's steps keeps each run > 1 s
    rows = measure(0.005 if smoke else 4.0, 1 if smoke else repeats, device)
    for row in rows:
        row["row"] = f"overhead/{row['model']}"
    return rows


def _summary(name: str, cold: dict, warm: list[dict], key: str) -> dict:
    """One row from a cold run and the warm repeats of a time-to-target run."""
    times = [run[key] for run in warm if run[key] is not None]
    row = {
        "row": name,
        "cold_seconds": cold[key],
        "median_seconds": round(statistics.median(times), 3) if times else None,
        "spread": f"{min(times):.3f}-{max(times):.3f}" if times else "",
        "reached": f"{len(times)}/{len(warm)}",
    }
    last = warm[-1] if warm else cold
    return row | {k: v for k, v in last.items() if k not in (key, "run")}


def mnist(device: str, repeats: int, smoke: bool) -> list[dict]:
    from benchmarks import speed

    extra = ("train.max_steps=4",) if smoke else ()
    rows = []
    for label, switches in (
        ("mnist_fast.yaml, eager", ()),
        ("mnist_fast.yaml, compiled", ("train.compile=true",)),
    ):
        if smoke and switches:
            continue  # compiling on a CPU costs a minute: the test checks the eager path
        overrides = (f"train.device={device}", *switches, *extra)
        runs = [
            speed.time_to_accuracy("mnist_fast", overrides, label)
            for _ in range(1 + (1 if smoke else repeats))
        ]
        rows.append(_summary(f"mnist/{label}", runs[0], runs[1:], "seconds_to_target"))
    seed = speed.seed_recipe(1 if smoke else 10, device, max_steps=4 if smoke else None)
    rows.append(
        {
            "row": "mnist/seed recipe",
            "cold_seconds": seed["seconds_to_target"],
            "median_seconds": seed["seconds_to_target"],
            **{k: v for k, v in seed.items() if k not in ("run", "seconds_to_target")},
        }
    )
    for row in rows[:-1]:
        if row["median_seconds"] and seed["seconds_to_target"]:
            row["speedup_vs_seed"] = round(seed["seconds_to_target"] / row["median_seconds"], 1)
    rows[0]["target"] = "< 1 s on an H100"
    return rows


def char_gpt_to_target(overrides: tuple[str, ...], target: float = GPT_TARGET) -> dict:
    """Train the GPU GPT recipe until an epoch's validation loss is <= target (or it ends)."""
    import dlab
    from dlab.training.callbacks import Callback

    class StopAtLoss(Callback):
        def __init__(self):
            self.curve: list[tuple[int, float]] = []
            self.training = 0.0
            self.reached: dict[str, Any] | None = None

        def on_epoch_end(self, trainer, record):
            self.training += record["time_s"]  # training only: ends with a device read
            self.curve.append((record["step"], round(record["val_loss"], 4)))
            if record["val_loss"] <= target and self.reached is None:
                self.reached = {
                    "train_seconds": round(self.training, 2),
                    "wall_seconds": round(record["elapsed_s"], 2),  # + validation, compile
                    "step": record["step"],
                }
                trainer.state.stop_reason = f"validation loss {record['val_loss']:.4f} <= {target}"

    stop = StopAtLoss()
    with tempfile.TemporaryDirectory() as runs:
        dlab.train(
            RECIPES / "shakespeare_char_gpt_gpu.yaml",
            list(overrides),
            runs_dir=runs,
            progress=False,
            report=False,
            evaluate_test=False,
            callbacks=[stop],
        )
    best = min(loss for _, loss in stop.curve)
    return {
        "run": "shakespeare_char_gpt_gpu.yaml",
        "train_seconds_to_target": stop.reached["train_seconds"] if stop.reached else None,
        "wall_seconds_to_target": stop.reached["wall_seconds"] if stop.reached else None,
        "step_reached": stop.reached["step"] if stop.reached else None,
        "best_val_loss": best,
        "steps": stop.curve[-1][0],
        "val_curve": stop.curve,
    }


def gpt(device: str, repeats: int, smoke: bool) -> list[dict]:
    rows = []
    for label, switches in (("eager", ("train.compile=false",)), ("compiled", ())):
        if smoke and not switches:
            continue
        overrides = (f"train.device={device}", *switches, *(SMOKE_GPT if smoke else ()))
        # one run per setting after the cold one: each is up to 5000 steps
        runs = [char_gpt_to_target(overrides) for _ in range(1 + min(repeats, 1))]
        row = _summary(f"gpt/{label}", runs[0], runs[1:], "train_seconds_to_target")
        row["target"] = f"val loss <= {GPT_TARGET} in < 60 s on an H100"
        rows.append(row)
    return rows


def utilisation(device: str, smoke: bool) -> list[dict]:
    from benchmarks.hardware import utilisation_rows

    if smoke:
        recipes, overrides, size = {"mnist_fast": 3}, (), 256
    else:  # steps inside one epoch, so no short last batch (and no recompilation) is timed
        recipes, overrides, size = {"mnist_fast": 200, "shakespeare_char_gpt_gpu": 60}, (), 8192
    rows = utilisation_rows(recipes, device, size, overrides)
    for row in rows:
        row["row"] = f"utilisation/{row['recipe']}"
    return rows


def inference(device: str, repeats: int, smoke: bool) -> list[dict]:
    import torch

    from benchmarks import speed
    from benchmarks.inference import latency_rows
    from dlab.models import build
    from dlab.recipe import from_dict

    torch.manual_seed(0)
    recipe = from_dict({"data": {"name": "mnist"}, "model": {"name": "cnn"}})
    bundle = speed.bundle("mnist")
    model = build(recipe.model, bundle.meta).to(device).eval()
    images = bundle.test.inputs[:64].to(device)

    def engine(module, bf16=False):
        def run_batch(x):
            autocast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16)
            with torch.no_grad(), autocast:
                return module(x)

        return run_batch

    engines = {"eager float32": engine(model), "eager bf16 autocast": engine(model, bf16=True)}
    compile_seconds = {}
    modes = ["default"] if smoke or device == "cpu" else ["default", "reduce-overhead"]
    if not smoke:
        for mode in modes:
            started = time.perf_counter()
            compiled = torch.compile(model, mode=mode)
            for batch in (1, 64):  # one graph per batch size, compiled here and not timed
                engine(compiled)(images[:batch])
            synchronize(device)
            name = "torch.compile" + (" (CUDA graphs)" if mode == "reduce-overhead" else "")
            engines[name] = engine(compiled)
            compile_seconds[name] = round(time.perf_counter() - started, 1)
    reference = engines["eager float32"](images).float()
    agreement = {
        name: float((fn(images).float() - reference).abs().max()) for name, fn in engines.items()
    }
    rows = latency_rows(engines, images, 3 if smoke else 200 * repeats, agreement, device)
    for row in rows:
        row["row"] = f"inference/{row['engine']}/batch {row['batch']}"
        if row["engine"] in compile_seconds:
            row["compile_s"] = compile_seconds[row["engine"]]
    return rows


def run_sections(
    sections: list[str], device: str = "cuda", repeats: int = 3, smoke: bool = False
) -> list[dict]:
    """The rows of each section, in order, each with `section` and `row` (its key)."""
    import torch

    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "no CUDA device here: run the GPU suite on a GPU machine, "
            "or `python -m benchmarks gpu --device cpu --smoke` to check it"
        )
    os.environ["DLAB_DATA_DIR"] = str(real_data_dir())
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    measure = {
        "peak": lambda: peak(device, smoke),
        "overhead": lambda: overhead(device, repeats, smoke),
        "mnist": lambda: mnist(device, repeats, smoke),
        "gpt": lambda: gpt(device, repeats, smoke),
        "utilisation": lambda: utilisation(device, smoke),
        "inference": lambda: inference(device, repeats, smoke),
    }
    rows = []
    for section in sections:
        started = time.perf_counter()
        found = measure[section]()
        for row in found:
            row["section"] = section
        print(f"\n## {section} ({time.perf_counter() - started:.0f} s)")
        print(
            markdown_table(
                found, [c for c in found[0] if c not in ("val_curve", "per_epoch_validation")]
            )
        )
        rows += found
    return rows


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks gpu")
    parser.add_argument("sections", nargs="*", default=list(SECTIONS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="a few steps each; writes nothing")
    options = parser.parse_args(args)
    rows = run_sections(options.sections, options.device, options.repeats, options.smoke)
    if not options.smoke:
        path = write_results("gpu", rows, key="row", device=options.device)
        print(f"\nwritten to {path}")
