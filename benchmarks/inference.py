"""Inference: eager vs torch.compile vs ONNX Runtime vs int8, at batch 1 and 64, in one process.

python -m benchmarks inference [--repeats 200]

The seed CNN (MNIST inputs; weights from a short training run so int8 calibration sees real
activations). Engines alternate call by call (A, B, C, D, A, ...) so drift hits all alike; p50/p99
latency and throughput (inputs/s at the median). Then each engine alone runs a few calls for its
memory: the process's peak resident memory meanwhile (every engine is loaded, so it differs little
between rows) and `call_mib`, how far that peak rose over what the process held before the calls
(the engine's working memory for one batch); on a GPU also `torch.cuda.max_memory_allocated`.
Every torch engine runs under `torch.inference_mode`. torch.compile runs twice: with its
defaults (dynamic shapes), and as inference suits it (weights frozen into the graph, static
shapes); its one-off compile time is reported beside it, since on short CPU jobs it can cost
more than it saves.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import markdown_table, real_data_dir, synchronize, write_results


def latency_rows(
    engines: dict[str, Callable],
    images: Any,
    repeats: int,
    agreement: dict[str, float],
    device: str = "cpu",
    batches: tuple[int, ...] = (1, 64),
) -> list[dict]:
    """p50/p99 latency, throughput and memory (`call_memory`) of each engine at each batch size,
    engines alternating call by call; the first engine is the baseline of `speedup_vs_eager`. On
    a GPU every call is timed to the end of its work (synchronised)."""
    rows = []
    for batch in batches:
        x = images[:batch].contiguous()
        times: dict[str, list[float]] = {name: [] for name in engines}
        for fn in engines.values():
            for _ in range(10):
                fn(x)
        for _ in range(repeats):
            for name, fn in engines.items():
                synchronize(device)
                start = time.perf_counter()
                fn(x)
                synchronize(device)
                times[name].append(time.perf_counter() - start)
        baseline = statistics.median(next(iter(times.values())))
        for name, values in times.items():
            ordered = sorted(values)
            p50 = statistics.median(ordered)
            rows.append(
                {
                    "engine": name,
                    "device": device,
                    "batch": batch,
                    "p50_ms": round(p50 * 1e3, 3),
                    "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1e3, 3),
                    "inputs_per_s": round(batch / p50),
                    "speedup_vs_eager": round(baseline / p50, 2),
                    "max_abs_diff_vs_eager": f"{agreement[name]:.1e}",
                    **call_memory(engines[name], x, device),
                }
            )
    return rows


def call_memory(engine: Callable, x: Any, device: str = "cpu", calls: int = 5) -> dict:
    """Peak memory in MiB while `engine(x)` runs `calls` times: the process's resident peak,
    `call_mib` (its rise over the resident size before the calls) and, on a GPU, the peak of
    allocated tensors."""
    import torch

    from dlab import runtime

    where = torch.device(device)
    synchronize(device)
    runtime.reset_peak_memory(where)
    before = runtime.resident_peak_mib()  # right after the reset the peak is the current size
    for _ in range(calls):
        engine(x)
    synchronize(device)
    peaks: dict[str, Any] = runtime.peak_memory(where)
    if before is not None and "peak_rss_mib" in peaks:
        peaks["call_mib"] = round(peaks["peak_rss_mib"] - before, 1)
    return peaks


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks inference")
    parser.add_argument("--repeats", type=int, default=200)
    options = parser.parse_args(args)
    os.environ["DLAB_DATA_DIR"] = str(real_data_dir())
    import numpy as np
    import onnxruntime
    import torch

    import dlab
    from benchmarks.common import RECIPES
    from dlab.compress import quantize as quant
    from dlab.data import build
    from dlab.recipe import load_recipe

    torch.set_num_threads(os.cpu_count() or 1)
    recipe = load_recipe(RECIPES / "mnist_cnn.yaml", ["train.max_steps=200"])
    bundle = build(recipe.data, 0)
    with tempfile.TemporaryDirectory() as runs:
        run = dlab.train(recipe, runs_dir=runs, progress=False, report=False, evaluate_test=False)
        model = run.model.eval()
        images = bundle.test.inputs[:64]
        calibration = [bundle.train.inputs[i : i + 64] for i in range(0, 1024, 64)]
        _, int8, _ = quant.quantize(model, "int8-static", calibration)
        onnx_path = os.path.join(runs, "cnn.onnx")
        torch.onnx.export(
            model,
            (images[:2],),
            onnx_path,
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            input_names=["input"],
        )
        session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        compiled, compile_s = {}, {}
        for name, freezing, dynamic in (
            ("torch.compile", False, True),  # the defaults a first try uses
            ("torch.compile frozen", True, False),  # what suits inference on a CPU
        ):
            # freezing folds the weights in as constants, which lets inductor pre-pack them for
            # oneDNN's convolutions; static shapes compile one graph per batch size
            torch._inductor.config.freezing = freezing
            torch._dynamo.reset()
            started = time.perf_counter()
            engine = torch.compile(model, dynamic=dynamic)
            with torch.inference_mode():
                engine(images)
                engine(images[:1])
            compiled[name], compile_s[name] = engine, time.perf_counter() - started
        torch._inductor.config.freezing = False

        def torch_engine(m):
            def run_batch(x):
                with torch.inference_mode():  # no autograd bookkeeping at all, unlike no_grad
                    return m(x)

            return run_batch

        engines = {
            "eager float32": torch_engine(model),
            **{name: torch_engine(engine) for name, engine in compiled.items()},
            "ONNX Runtime": lambda x: session.run(None, {"input": x.numpy()})[0],
            "int8 static (torch.ao)": torch_engine(int8),
        }
        reference = model(images).detach().numpy()
        agreement = {
            name: float(np.abs(np.asarray(fn(images)) - reference).max())
            for name, fn in engines.items()
        }
        rows = latency_rows(engines, images, options.repeats, agreement)
    for row in rows:
        if row["engine"] in compile_s:
            row["compile_s"] = round(compile_s[row["engine"]], 1)
    path = write_results("inference", rows)
    print(markdown_table(rows, [*rows[0], "compile_s"]))
    print(f"\nthreads {torch.get_num_threads()}; written to {path}")
