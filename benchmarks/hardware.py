"""Threads and hardware utilisation: what the CPU can do, and how much of it training gets.

python -m benchmarks threads        # OpenMP wait policy and thread count, each in a fresh process
python -m benchmarks utilisation    # achieved training FLOP/s / the peak of a large matmul

threads: the seed MLP and the seed CNN, trained by a plain loop on in-memory batches, in a new
  Python process per setting (OpenMP reads its wait policy once, when it starts): 2 threads with
  OpenMP's default waits, with ACTIVE (spinning) and PASSIVE (sleeping) waits, with dlab's short
  spin (PASSIVE and GOMP_SPINCOUNT=30000), 1 thread, and dlab's `threads: auto` (its waits, and
  the thread count its start-of-training timing picks; the timing itself, about 0.3 s, is not in
  the figure), alternating over the repeats; on an idle machine and with one core busy in another
  process. `auto / best fixed` compares auto with the best of the three fixed policies a user
  would otherwise pick: PyTorch's default, PASSIVE on 2 threads, 1 thread.
utilisation: the forward FLOPs per sample are counted by torch's FlopCounterMode, a training step
  costs three forwards' worth (forward, and a backward of twice that); achieved = that times the
  samples/s of dlab's trainer, against the median of a 2048² float32 (and bfloat16) matmul.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks.common import markdown_table, real_data_dir, write_results
from dlab.runtime import WAIT_POLICY

SETTINGS = {
    "2 threads, OpenMP default waits": {"env": {}, "threads": "2"},
    "2 threads, OMP_WAIT_POLICY=ACTIVE": {"env": {"OMP_WAIT_POLICY": "ACTIVE"}, "threads": "2"},
    "2 threads, OMP_WAIT_POLICY=PASSIVE": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "threads": "2"},
    "1 thread": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "threads": "1"},
    "2 threads, dlab's waits": {"env": WAIT_POLICY, "threads": "2"},
    "dlab threads: auto": {"env": WAIT_POLICY, "threads": "auto"},
}
FIXED = ("2 threads, OpenMP default waits", "2 threads, OMP_WAIT_POLICY=PASSIVE", "1 thread")
# a second process wanting one core (a data worker, a server, another job): spin-waiting threads
# then fight it for the cores instead of yielding them
NEIGHBOUR = "import time\nwhile True: sum(range(10000))"

CHILD = r"""
import json, os, sys, time
import torch, torch.nn.functional as F
from dlab import runtime
from dlab.models import build
from dlab.recipe import from_dict
from dlab.models.examples import example_meta
name, steps = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
meta = example_meta(name)
model = build(from_dict({"data": {"name": "mnist"}, "model": {"name": name}}).model, meta)
x = torch.randn(64, *meta.input_shape); y = torch.randint(0, 10, (64,))
threads = os.environ["THREADS"]
if threads == "auto":  # as the trainer does it: time the choices on one batch, take the fastest
    threads = runtime.choose_threads("auto", None, runtime.time_threads(model, x))
torch.set_num_threads(int(threads))
opt = torch.optim.Adam(model.parameters(), 1e-3)
def step():
    opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
for _ in range(5): step()
start = time.perf_counter()
for _ in range(steps): step()
print(json.dumps([steps * 64 / (time.perf_counter() - start), torch.get_num_threads()]))
"""


def threads(args: list[str]) -> list[dict]:
    repeats = int(args[0]) if args else 3
    rows = []
    for busy in (False, True):
        neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR]) if busy else None
        try:
            for model, steps in (("mlp", 600), ("cnn", 60)):
                runs: dict[str, list[tuple[float, int]]] = {label: [] for label in SETTINGS}
                for _ in range(repeats):  # alternating: a drift in the machine hits every setting
                    for label, setting in SETTINGS.items():
                        runs[label].append(run_setting(setting, model, steps))
                rows += setting_rows(runs, f"seed {model.upper()}", busy)
                print(markdown_table(rows[-len(SETTINGS) :], list(rows[-1])), flush=True)
        finally:
            if neighbour is not None:
                neighbour.kill()
    return rows


def run_setting(setting: dict, model: str, steps: int) -> tuple[float, int]:
    """(samples/s, threads used) of one training loop in a fresh process with this setting."""
    env = {k: v for k, v in os.environ.items() if k not in WAIT_POLICY}
    env.update(setting["env"], THREADS=setting["threads"])
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model, str(steps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rate, used = json.loads(out.stdout.strip().splitlines()[-1])
    return rate, used


def setting_rows(runs: dict[str, list[tuple[float, int]]], model: str, busy: bool) -> list[dict]:
    medians = {label: statistics.median(r for r, _ in values) for label, values in runs.items()}
    best_fixed = max(medians[label] for label in FIXED)
    rows = []
    for label, values in runs.items():
        rates = [r for r, _ in values]
        rows.append(
            {
                "model": model,
                "machine": "one core busy elsewhere" if busy else "idle",
                "setting": label,
                "threads used": "/".join(str(t) for t in sorted({t for _, t in values})),
                "samples_per_s": round(medians[label]),
                "spread": f"{min(rates):.0f}-{max(rates):.0f}",
                "vs_default": round(medians[label] / medians[next(iter(SETTINGS))], 2),
                "vs_best_fixed": round(medians[label] / best_fixed, 3),
            }
        )
    return rows


def matmul_peak(dtype, size: int = 2048, repeats: int = 10, device: str = "cpu") -> float:
    """FLOP/s of a size² matrix product (median of `repeats`, after two warm-up products)."""
    import torch

    from benchmarks.common import synchronize

    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


# recipe -> training steps measured (the first of them, with any compile, are a warm-up run)
CPU_RECIPES = {"mnist_mlp": 400, "mnist_cnn": 60, "mnist_fast": 100, "shakespeare_char_gpt": 150}


def utilisation(args: list[str]) -> list[dict]:
    import torch

    from dlab import runtime

    torch.set_num_threads(runtime.usable_cores())
    return utilisation_rows(CPU_RECIPES, device="cpu", size=2048)


def utilisation_rows(
    recipes: dict[str, int], device: str, size: int, overrides: tuple[str, ...] = ()
) -> list[dict]:
    """Achieved training FLOP/s of each recipe on `device` against a size² matmul's peak there.

    Each recipe trains its steps twice: the first fit pays the one-off costs (CUDA start, cuDNN
    autotuning, compilation), the second is measured (its epoch's training time, which ends by
    reading a value from the device, so queued GPU work is inside it; validation is not). The
    row's peak memory is the second fit's: the process's resident peak (the data set and the
    libraries included) and, on a GPU, the peak of allocated tensors.
    """
    os.environ["DLAB_DATA_DIR"] = str(real_data_dir())
    import torch

    import dlab
    from benchmarks.common import RECIPES
    from dlab import runtime
    from dlab.data import build
    from dlab.models import build as build_model
    from dlab.recipe import load_recipe

    peaks = {
        "float32": matmul_peak(torch.float32, size, device=device),
        "bfloat16": matmul_peak(torch.bfloat16, size, device=device),
    }
    print(
        f"matmul {size}² on {device}: {peaks['float32'] / 1e9:.1f} GFLOP/s float32, "
        f"{peaks['bfloat16'] / 1e9:.1f} bfloat16"
    )
    rows = []
    for name, steps in recipes.items():
        recipe = load_recipe(RECIPES / f"{name}.yaml", list(overrides))
        bundle = build(recipe.data, 0)
        x, _ = bundle.train.sample_batch()
        model = build_model(recipe.model, bundle.meta)
        per_sample = runtime.count_forward_flops(model, x) / len(x)
        for _ in range(2):  # the first pays the one-off costs
            runtime.reset_peak_memory(torch.device(device))  # so the row's peak is the second's
            history = dlab.fit(
                model,
                bundle,
                optimizer=recipe.train.optimizer.model_dump(),
                loss=recipe.train.loss.model_dump(),
                epochs=1,
                max_steps=steps,
                progress=False,
                precision=recipe.train.precision,
                channels_last=recipe.train.channels_last,
                compile=recipe.train.compile,
                checkpoint_every=10**9,
                device=device,
            )
        rate = history.records[-1]["samples_per_s"]  # the epoch's training time, synchronised
        achieved = 3 * per_sample * rate
        peak = peaks["bfloat16" if recipe.train.precision == "bf16" else "float32"]
        rows.append(
            {
                "recipe": name,
                "device": device,
                "precision": recipe.train.precision,
                "threads": torch.get_num_threads(),
                "forward_MFLOP_per_sample": round(per_sample / 1e6, 2),
                "samples_per_s": round(rate),
                "achieved_GFLOP_s": round(achieved / 1e9, 1),
                "matmul_peak_GFLOP_s": round(peak / 1e9, 1),
                "utilisation": round(achieved / peak, 3),
                **runtime.peak_memory(torch.device(device)),  # data and model included
            }
        )
        print(markdown_table(rows[-1:], list(rows[-1])), flush=True)
    return rows


def main_threads(args: list[str]) -> None:
    _finish("threads", threads(args))


def main_utilisation(args: list[str]) -> None:
    _finish("utilisation", utilisation(args))


def _finish(suite: str, rows: list[dict]) -> None:
    path = write_results(suite, rows)
    print(markdown_table(rows, list(rows[0])))
    print(json.dumps({"written": str(path)}))
