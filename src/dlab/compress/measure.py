"""Size, latency and accuracy of models, measured side by side in one process."""

from __future__ import annotations

import gzip
import io
import statistics
import time
from typing import Any

import torch
from torch import nn

from dlab.data import DataBundle
from dlab.training.metrics import forward


def serialized_bytes(model: nn.Module) -> int:
    """Bytes of the model's state as stored (int8 tensors stay int8), measured in memory."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)  # a measurement only: runs store safetensors
    return buffer.getbuffer().nbytes


def compressed_bytes(model: nn.Module) -> int:
    """gzip size of the serialized state: what zeros from pruning save on disk and in transfer."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return len(gzip.compress(buffer.getvalue(), compresslevel=6))


def example_inputs(bundle: DataBundle, batch: int) -> Any:
    """A batch of `batch` validation (or test) inputs, repeated if the split is smaller."""
    loader = bundle.val or bundle.test or bundle.train
    x, _ = loader.sample_batch()
    if isinstance(x, tuple):
        return tuple(t[:1].repeat(batch, *([1] * (t.ndim - 1))) for t in x)
    return x[:1].repeat(batch, *([1] * (x.ndim - 1)))


@torch.no_grad()
def latencies(
    models: dict[str, nn.Module], bundle: DataBundle, batch_sizes=(1, 64), repeats: int = 30
) -> dict[str, dict[str, float]]:
    """Median and 99th-percentile latency (ms) per model and batch size, the models alternating."""
    results: dict[str, dict[str, float]] = {name: {} for name in models}
    for batch in batch_sizes:
        inputs = example_inputs(bundle, batch)
        samples: dict[str, list[float]] = {name: [] for name in models}
        for model in models.values():
            model.eval()
            for _ in range(3):  # warm up
                forward(model, inputs)
        for _ in range(repeats):
            for name, model in models.items():  # A, B, A, B ...: drift hits every model alike
                start = time.perf_counter()
                forward(model, inputs)
                samples[name].append((time.perf_counter() - start) * 1e3)
        for name, times in samples.items():
            ordered = sorted(times)
            results[name][f"batch{batch}_p50_ms"] = statistics.median(ordered)
            results[name][f"batch{batch}_p99_ms"] = ordered[
                min(len(ordered) - 1, int(0.99 * len(ordered)))
            ]
    return results
