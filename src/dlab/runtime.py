"""Where and how dlab computes: OpenMP wait policy, thread count, device, and a hardware summary.

Thread policy, measured on the 2-core development machine (torch 2.13 CPU, see benchmarks/):
- With OpenMP's default spin-waiting, 2-thread training ran 2-6x slower and noisy whenever
  anything else wanted a core. `OMP_WAIT_POLICY=PASSIVE` removes that, but must be set before
  the OpenMP runtime loads, i.e. before `import torch`: `dlab/__init__.py` does it first thing.
- With PASSIVE waiting, tiny steps lose to thread hand-off: the seed MLP at batch 64
  (~14 MFLOP forward per step) ran 3x slower on 2 threads than on 1, while the seed CNN
  (~1.5 GFLOP per step) ran 1.6x faster on 2. So `threads: auto` counts the forward FLOPs of
  one training batch and uses one thread below `SMALL_STEP_FLOPS`, all usable cores above it.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
SMALL_STEP_FLOPS = 100e6  # forward FLOPs per training batch below which one thread is faster


def set_wait_policy() -> None:
    """Make OpenMP threads sleep instead of spin when idle, unless the user chose otherwise."""
    if "torch" in sys.modules:
        return  # too late: the OpenMP runtime has read its environment already
    os.environ.setdefault(WAIT_POLICY_ENV, "PASSIVE")


def usable_cores() -> int:
    """CPU cores this process may run on (respects affinity masks and containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def choose_threads(requested: int | str, forward_flops: float | None) -> int:
    """The intra-op thread count for training: `requested` if a number, else by step size."""
    if isinstance(requested, int):
        return requested
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return int(os.environ["OMP_NUM_THREADS"])
    if forward_flops is not None and forward_flops < SMALL_STEP_FLOPS:
        return 1
    return usable_cores()


def count_forward_flops(model: Any, inputs: Any) -> float | None:
    """FLOPs of one forward pass on `inputs` (matmuls and convolutions), or None if uncountable."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*inputs) if isinstance(inputs, tuple) else model(inputs)
        return float(counter.get_total_flops())
    except Exception:  # counting is advisory; an exotic model must still train
        return None
    finally:
        model.train(was_training)


def resolve_device(name: str = "auto") -> Any:
    """A torch.device from 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; clear error if absent."""
    import torch

    from dlab.errors import DlabError

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DlabError(
            f"train.device: '{name}' was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DlabError(
            f"train.device: '{name}' was asked for but MPS is not available; use 'auto' or 'cpu'"
        )
    return device


def cpu_model() -> str:
    """The CPU's marketing name, as the OS reports it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_summary(device: Any = None) -> dict[str, Any]:
    """What the numbers in a run were measured on: CPU, cores, threads, GPU, versions."""
    import torch

    import dlab

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get(WAIT_POLICY_ENV, "default"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dlab": dlab.__version__,
        "device": str(device) if device is not None else "cpu",
    }
    if device is not None and getattr(device, "type", "") == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def reset_peak_memory(device: Any = None) -> None:
    """Start counting the device's peak memory afresh (CUDA; the process's resident peak cannot
    be reset, see `peak_memory`)."""
    import torch

    if device is not None and getattr(device, "type", "") == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: Any = None) -> dict[str, float]:
    """Peak memory in MiB: the process's resident set since it started (`ru_maxrss`: the run's
    own peak when it trains in a process of its own, as from the CLI), and on a GPU the tensors'
    peak since `reset_peak_memory` (the run's own)."""
    import torch

    peaks: dict[str, float] = {}
    try:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        peaks["peak_rss_mib"] = round(kib / (1024 if sys.platform != "darwin" else 2**20), 1)
    except (ImportError, OSError):  # Windows has no resource module
        pass
    if device is not None and getattr(device, "type", "") == "cuda":
        peaks["cuda_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return peaks
