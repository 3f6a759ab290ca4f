"""Thread policy and device choice."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlab import runtime
from dlab.errors import DlabError


def test_wait_policy_is_passive_before_torch_loads():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import dlab, os, sys; print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["PASSIVE", "False"]  # set, and `import dlab` alone does not load torch


def test_choose_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the policy itself, not the user's pin
    assert runtime.choose_threads(3, None) == 3
    assert runtime.choose_threads("auto", 1e6) == 1
    assert runtime.choose_threads("auto", 1e10) == runtime.usable_cores()


def test_choose_threads_respects_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert runtime.choose_threads("auto", 1e6) == 2


def test_forward_flops_of_a_linear_layer():
    model = nn.Linear(100, 10)
    assert runtime.count_forward_flops(model, torch.zeros(32, 100)) == 2 * 32 * 100 * 10
    assert model.training  # restored


def test_devices():
    assert runtime.resolve_device("cpu").type == "cpu"
    assert runtime.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(
            DlabError, match="train.device: 'cuda' was asked for but no CUDA GPU is visible"
        ):
            runtime.resolve_device("cuda")


def test_hardware_summary_names_the_machine():
    info = runtime.hardware_summary()
    assert info["cores"] >= 1 and info["torch"] == torch.__version__ and info["cpu"]


def test_peak_memory_reads_the_process_and_the_gpu(monkeypatch):
    import resource

    cpu = runtime.peak_memory(torch.device("cpu"))
    assert cpu == {
        "peak_rss_mib": pytest.approx(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, abs=0.1
        )
    }
    # the CUDA path, on a machine without a GPU: torch.cuda's counters stand in
    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append(device))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 3.5 * 2**20)
    gpu = torch.device("cuda", 0)
    runtime.reset_peak_memory(gpu)
    assert calls == [gpu]
    assert runtime.peak_memory(gpu)["cuda_peak_allocated_mib"] == 3.5
    runtime.reset_peak_memory(torch.device("cpu"))
    assert calls == [gpu]  # nothing to reset on the CPU
