"""The command line in real subprocesses: SIGKILL and resume, usage errors, `python -m dlab`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import dlab_command
from safetensors.torch import load_file

TINY = ["-o", "model.channels=[8, 16]", "-o", "model.hidden=32"]
TIMING = {"time_s", "samples_per_s", "elapsed_s"}


def dlab(*args, env=None, timeout=300, check_ok=False) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    result = subprocess.run(
        [*dlab_command(), *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    if check_ok:
        assert result.returncode == 0, result.stderr
    return result


def test_a_user_error_in_a_real_process_is_one_line_and_exit_2():
    result = dlab("train", "demo", "-o", "train.optimizer.lr=-0.1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("dlab: error: ") and line.endswith(
        "train.optimizer.lr: should be greater than 0 (got -0.1)"
    )


def test_usage_errors_exit_2_without_traceback():
    result = dlab("train", "--no-such-flag")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert dlab("--help").returncode == 0


def latest_step(run_dir: Path) -> int | None:
    pointer = run_dir / "checkpoints" / "latest"
    try:
        return int(pointer.read_text().strip().rsplit("step", 1)[1])
    except (OSError, ValueError, IndexError):
        return None


def comparable(run_dir: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k not in TIMING}
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]


def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path):
    args = [
        "train",
        "demo",
        *TINY,
        "-o",
        "train.epochs=4",
        "-o",
        "train.checkpoint_every=10",
        "-o",
        "train.log_every=5",
        "-q",
    ]
    dlab(*args, "--runs-dir", tmp_path / "straight", check_ok=True)
    straight = next((tmp_path / "straight" / "demo").iterdir())

    env = {**os.environ, "DLAB_RUNS_DIR": str(tmp_path / "killed")}
    process = subprocess.Popen(
        [*dlab_command(), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    killed_at = None
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        runs = list((tmp_path / "killed" / "demo").glob("*"))
        step = latest_step(runs[0]) if runs else None
        if (
            step is not None and step >= 70 and step % 63
        ):  # 63 steps per epoch: inside epoch 2 or later
            process.send_signal(signal.SIGKILL)
            killed_at = step
            break
        time.sleep(0.005)
    process.wait(timeout=60)
    assert killed_at is not None, "the run finished before it could be killed mid-epoch"
    assert process.returncode == -signal.SIGKILL
    killed = next((tmp_path / "killed" / "demo").iterdir())
    assert json.loads((killed / "meta.json").read_text())["status"] == "running"
    assert not (killed / "model.safetensors").exists()

    dlab("train", "--resume", killed, "-q", check_ok=True)
    a, b = load_file(straight / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert comparable(straight) == comparable(killed)
    assert (
        json.loads((killed / "meta.json").read_text())["test"]
        == json.loads((straight / "meta.json").read_text())["test"]
    )


def test_python_dash_m_dlab_works():
    result = subprocess.run(
        [sys.executable, "-m", "dlab", "list", "losses"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "cross_entropy" in result.stdout
