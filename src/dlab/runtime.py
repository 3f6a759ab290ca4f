"""Where and how dlab computes: OpenMP wait policy, thread count, device, and a hardware summary.

Thread policy, measured on a 2-core Intel VM (torch 2.13 CPU, libgomp; `python -m benchmarks
threads`, seed MLP and seed CNN at batch 64, samples/s, median of 3, 2026-12-07):
- OpenMP's default waits spin for a few milliseconds (libgomp: 300,000 spins) before a thread
  sleeps. With another process busy on one core, 2-thread training then fell to 24% (MLP: 11,452
  against 47,746 on one thread) and 41% (CNN: 289 against 707) of one thread's speed.
- `OMP_WAIT_POLICY=PASSIVE` (sleep at once) removes that, but hands every small step to a
  sleeping thread: idle, the MLP ran at 37% of the default's speed on 2 threads, the CNN at 90%.
- So dlab sets PASSIVE with `GOMP_SPINCOUNT=30000` (libgomp takes an explicit spin count over
  the policy's): a waiting thread spins a fraction of a millisecond, then sleeps. Idle, 2
  threads then ran as fast as the default (MLP 57,872 against 57,004; CNN 1,423 against
  1,422); with a core busy they still lost to one thread. And so
- `threads: auto` times a forward and backward pass of one training batch at 1, half and all
  usable cores when a run of at least `TIMED_MIN_STEPS` starts (about 0.3 s: `time_threads`)
  and trains on the fastest, which follows the machine's load where a rule on the model's FLOPs
  cannot (the fallback, for shorter runs and for outputs that cannot be timed so: one thread
  below `SMALL_STEP_FLOPS`).
Both variables are read once, when OpenMP starts, i.e. at `import torch`: `dlab/__init__.py`
sets them first thing, unless the user set either.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
from typing import Any

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
# the wait policy dlab sets where the user has set neither variable (see the module's text)
WAIT_POLICY = {WAIT_POLICY_ENV: "PASSIVE", "GOMP_SPINCOUNT": "30000"}
SMALL_STEP_FLOPS = 100e6  # forward FLOPs per training batch below which one thread is faster
CALIBRATION_BUDGET_S = 0.3  # seconds `threads: auto` spends timing the thread counts
# shorter runs take the FLOP rule: the timing would be a noticeable share of their time
TIMED_MIN_STEPS = 500


def set_wait_policy(env: dict[str, str] | None = None) -> None:
    """Make OpenMP threads spin briefly, then sleep, when idle: in `env` (a child process's
    environment), or in this process's own before torch loads. A policy the user chose, through
    either variable, is left as it is."""
    if env is None:
        if "torch" in sys.modules:
            return  # too late: the OpenMP runtime has read its environment already
        env = os.environ  # type: ignore[assignment]
    if not set(WAIT_POLICY) & set(env):
        env.update(WAIT_POLICY)


def usable_cores() -> int:
    """CPU cores this process may run on (respects affinity masks and containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def choose_threads(
    requested: int | str, forward_flops: float | None, timings: dict[int, float] | None = None
) -> int:
    """The intra-op thread count for training: `requested` if a number, `OMP_NUM_THREADS` if
    set, else the fastest of the measured `timings` (see `time_threads`), else by step size."""
    if isinstance(requested, int):
        return requested
    if pinned():
        return int(os.environ["OMP_NUM_THREADS"])
    if timings:
        return min(timings, key=lambda n: timings[n])
    if forward_flops is not None and forward_flops < SMALL_STEP_FLOPS:
        return 1
    return usable_cores()


def pinned() -> bool:
    """Whether the user fixed the thread count with `OMP_NUM_THREADS`."""
    return os.environ.get("OMP_NUM_THREADS", "").isdigit()


def thread_choices() -> list[int]:
    """The thread counts `threads: auto` measures: one, half the usable cores, all of them."""
    cores = usable_cores()
    return sorted({1, max(1, cores // 2), cores})


def time_threads(
    model: Any,
    inputs: Any,
    choices: list[int] | None = None,
    budget_s: float = CALIBRATION_BUDGET_S,
    context: Any = contextlib.nullcontext,
) -> dict[int, float] | None:
    """Seconds per forward and backward pass of `inputs` at each thread count: the median of
    up to 5 rounds (about `budget_s` in all) that each switch to every count in turn and time 3
    passes there after an untimed one (1 where one round of that would exceed the budget), after
    a warm-up pass at each; hooks on the model see these passes too. Timing the pass right after a switch measured the wake-up of the
    sleeping threads: the idle seed MLP then chose 1 thread, at 0.8x of 2. The model's weights,
    buffers and gradients and the random state are left as they were. None when there is only
    one choice or nothing to differentiate."""
    import torch

    choices = choices or thread_choices()
    if len(choices) < 2:
        return None
    params = list(model.parameters())
    grads = [p.grad for p in params]  # set aside: a backward pass would add to them
    for p in params:
        p.grad = None
    buffers = [b.detach().clone() for b in model.buffers()]
    rng, previous = torch.get_rng_state(), torch.get_num_threads()

    def once(threads: int) -> float:
        torch.set_num_threads(threads)
        start = time.perf_counter()
        with context():
            outputs = model(*inputs) if isinstance(inputs, tuple) else model(inputs)
        _differentiable_sum(outputs).backward()
        for p in params:
            p.grad = None
        return time.perf_counter() - start

    try:
        slowest = max(once(n) for n in choices)  # warm-up: allocations, kernels' set-up
        # a pass long against the budget is timed well enough by one
        per_round = 3 if len(choices) * 4 * slowest <= budget_s else 1
        rounds = int(min(max(budget_s / (len(choices) * (per_round + 1) * slowest), 1), 5))
        times: dict[int, list[float]] = {n: [] for n in choices}
        for _ in range(rounds):  # alternating, so that a change in the machine hits every count
            for n in choices:
                once(n)  # untimed: the first pass after a switch wakes the sleeping threads
                times[n] += [once(n) for _ in range(per_round)]
        return {n: statistics.median(t) for n, t in times.items()}
    except Exception:  # advisory, like the FLOP count: a model training fails on its own
        return None
    finally:
        with torch.no_grad():
            for buffer, saved in zip(model.buffers(), buffers, strict=True):
                buffer.copy_(saved)
        for p, grad in zip(params, grads, strict=True):
            p.grad = grad
        torch.set_rng_state(rng)
        torch.set_num_threads(previous)


def _differentiable_sum(outputs: Any) -> Any:
    """The sum of every floating-point tensor in `outputs` that requires a gradient."""
    if hasattr(outputs, "requires_grad"):
        parts = [outputs]
    elif isinstance(outputs, dict):
        parts = list(outputs.values())
    elif isinstance(outputs, (list, tuple)):
        parts = list(outputs)
    else:
        parts = []
    parts = [t for t in parts if getattr(t, "requires_grad", False) and t.is_floating_point()]
    if not parts:
        raise ValueError("the outputs hold no tensor a backward pass could start from")
    return sum(t.float().sum() for t in parts)


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
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT", "default"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dlab": dlab.__version__,
        "device": str(device) if device is not None else "cpu",
    }
    if device is not None and getattr(device, "type", "") == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def reset_peak_memory(device: Any = None) -> None:
    """Start counting peak memory afresh: the process's resident peak where Linux allows it
    (`/proc/self/clear_refs`), and the device's on a GPU."""
    import torch

    # Linux only (elsewhere the peak counts from the start); 5 resets VmHWM to the current size
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    if device is not None and getattr(device, "type", "") == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def resident_peak_mib() -> float | None:
    """This process's peak resident memory in MiB, since it started or since
    `reset_peak_memory`: Linux's VmHWM, else `ru_maxrss`. On Linux `ru_maxrss` keeps, across
    exec, the resident size of the process that started this one: a run started by a 2 GB
    process reported 2 GB before its first step."""
    status = "/proc/self/status"
    with contextlib.suppress(OSError, ValueError, IndexError), open(status, errors="replace") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    try:
        import resource
    except ImportError:  # Windows
        return None
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(kib / (1024 if sys.platform != "darwin" else 2**20), 1)


def peak_memory(device: Any = None) -> dict[str, float]:
    """Peak memory in MiB since `reset_peak_memory`: the process's resident set (see
    `resident_peak_mib`), and on a GPU the tensors'."""
    import torch

    peaks: dict[str, float] = {}
    resident = resident_peak_mib()
    if resident is not None:
        peaks["peak_rss_mib"] = resident
    if device is not None and getattr(device, "type", "") == "cuda":
        peaks["cuda_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return peaks
