"""Thread policy and device choice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from dlab import runtime
from dlab.errors import DlabError


def test_wait_policy_is_a_short_spin_before_torch_loads_unless_the_user_chose():
    import os
    import subprocess
    import sys

    show = "import dlab, os, sys; e = os.environ.get; "
    show += "print(e('OMP_WAIT_POLICY'), e('GOMP_SPINCOUNT'), 'torch' in sys.modules)"

    def policy(**chosen: str) -> list[str]:
        env = {k: v for k, v in os.environ.items() if k not in runtime.WAIT_POLICY}
        run = subprocess.run(
            [sys.executable, "-c", show],
            env={**env, **chosen},
            check=True,
            capture_output=True,
            text=True,
        )
        return run.stdout.split()

    # set, and `import dlab` alone does not load torch
    assert policy() == ["PASSIVE", "30000", "False"]
    # a policy the user chose stands as it is: no spin count slipped under their ACTIVE
    assert policy(OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "None", "False"]
    assert policy(GOMP_SPINCOUNT="0") == ["None", "0", "False"]
    env = {"OMP_WAIT_POLICY": "PASSIVE"}
    runtime.set_wait_policy(env)  # a child's environment, as torchrun's is
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    runtime.set_wait_policy(env := {})
    assert env == runtime.WAIT_POLICY


def test_choose_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the policy itself, not the user's pin
    assert runtime.choose_threads(3, None) == 3
    assert runtime.choose_threads("auto", 1e6) == 1
    assert runtime.choose_threads("auto", 1e10) == runtime.usable_cores()


def test_choose_threads_respects_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert runtime.choose_threads("auto", 1e6) == 2
    assert runtime.choose_threads("auto", 1e6, {1: 0.1, 2: 0.5}) == 2  # the pin beats timings


def test_choose_threads_takes_the_fastest_measured_count(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert runtime.choose_threads("auto", 1e10, {1: 0.1, 2: 0.5}) == 1  # not the FLOP rule's 2
    assert runtime.choose_threads("auto", 1e6, {1: 0.5, 2: 0.2, 4: 0.3}) == 2
    assert runtime.choose_threads(3, 1e6, {1: 0.1}) == 3  # a number asked for is kept


def test_time_threads_measures_each_count_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.Linear(16, 3))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    left_over = torch.full_like(model[0].weight, 0.25)  # a gradient the caller had
    model[0].weight.grad = left_over.clone()
    inputs = torch.randn(32, 8)
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    timings = runtime.time_threads(model, inputs, choices=[1, 2])
    assert set(timings) == {1, 2} and all(0 < t < 1 for t in timings.values())
    for name, value in model.state_dict().items():  # batch norm's running statistics too
        assert torch.equal(value, before[name]), name
    assert torch.equal(model[0].weight.grad, left_over) and model[3].weight.grad is None
    assert torch.equal(torch.get_rng_state(), rng)  # dropout's masks drew nothing for training
    assert torch.get_num_threads() == threads


def test_time_threads_gives_up_where_there_is_nothing_to_choose_or_differentiate():
    frozen = nn.Linear(4, 2).requires_grad_(False)
    assert runtime.time_threads(frozen, torch.zeros(3, 4), choices=[1, 2]) is None
    assert runtime.time_threads(nn.Linear(4, 2), torch.zeros(3, 4), choices=[1]) is None
    cores = runtime.usable_cores()
    assert runtime.thread_choices() == sorted({1, max(1, cores // 2), cores})


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
    assert info["gomp_spincount"] == os.environ.get("GOMP_SPINCOUNT", "default")


def test_peak_memory_reads_the_process_and_the_gpu(monkeypatch):
    cpu = runtime.peak_memory(torch.device("cpu"))
    assert cpu == {"peak_rss_mib": runtime.resident_peak_mib()} and cpu["peak_rss_mib"] > 50
    # the CUDA path, on a machine without a GPU: torch.cuda's counters stand in
    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: calls.append(device))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 3.5 * 2**20)
    gpu = torch.device("cuda", 0)
    runtime.reset_peak_memory(gpu)
    assert calls == [gpu]
    assert runtime.peak_memory(gpu)["cuda_peak_allocated_mib"] == 3.5
    runtime.reset_peak_memory(torch.device("cpu"))
    assert calls == [gpu]  # torch's counters are the GPU's only


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux's /proc only")
def test_a_peak_is_the_processs_own_and_starts_afresh_on_reset():
    """A child process reports its own peak, not the resident size of the process that started
    it (which ru_maxrss keeps across exec), and reset_peak_memory forgets an earlier peak."""
    import subprocess
    import sys

    held = bytearray(600 * 2**20)
    held[::4096] = b"\1" * len(held[::4096])  # touched: resident
    child = (
        "import resource; from dlab.runtime import resident_peak_mib; "
        "print(resident_peak_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
    own, inherited = map(float, done.stdout.split())
    assert inherited > 600 and own < 200  # dlab without torch: a few tens of MiB
    del held
    peak = runtime.resident_peak_mib()
    assert peak > 600
    runtime.reset_peak_memory(torch.device("cpu"))
    assert runtime.resident_peak_mib() < peak - 400  # the 600 MiB freed are no longer the peak
