"""Data-parallel training: 2 gloo processes take the steps of 1, checkpoints cross process counts,
and a killed rank ends the job quickly with a clear message."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import dlab_command
from listening import free_port
from numerics import assert_within_measured_drift

from dlab.errors import DlabError
from dlab.training import distributed

RECIPE = {
    "name": "ddp_cnn",
    "seed": 0,
    "data": {"name": "mnist_sample", "batch_size": 64, "val_size": 500},
    # a small CNN: these tests are about the processes' arithmetic, not the model's size
    "model": {"name": "cnn", "channels": [8, 16], "hidden": 32},
    "train": {
        "epochs": 4,
        "max_steps": 200,
        "log_every": 10,
        "checkpoint_every": 100,
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    },
}


def test_take_cuts_nested_batches_into_contiguous_chunks():
    batch = ((torch.arange(10), {"mask": torch.arange(10) * 2}), torch.arange(10) + 100)
    first, second, third = (distributed.take(batch, r, 3) for r in range(3))
    assert first[0][0].tolist() == [0, 1, 2, 3]
    assert second[0][1]["mask"].tolist() == [8, 10, 12]
    assert third[1].tolist() == [107, 108, 109]
    chunks = distributed.take_all(torch.arange(7), 2)
    assert [c.tolist() for c in chunks] == [[0, 1, 2, 3], [4, 5, 6]]


def test_every_rank_needs_a_sample_of_the_last_batch():
    distributed.check_batches(130, 64, world=2)  # last batch of 2: one each
    with pytest.raises(DlabError, match="4 processes need at least 4 samples.*last batch of 2"):
        distributed.check_batches(130, 64, world=4)


def write(tmp_path: Path, **train) -> Path:
    recipe = {**RECIPE, "train": {**RECIPE["train"], **train}}
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def train(tmp_path: Path, *args: str, nproc: int = 1, runs: str = "runs", timeout: int = 300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*dlab_command(), "train", *args, "--runs-dir", str(tmp_path / runs), "-q"]
    command += ["--nproc", str(nproc)] if nproc != 1 else []
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / runs / RECIPE["name"]).iterdir()
    return run, time.perf_counter() - started


def losses(run: Path) -> dict[int, float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if r["kind"] == "step"}


def assert_same_curve(
    got: dict[int, float],
    expected: dict[int, float],
    halves: dict[int, float],
    exact: dict[int, float] | None = None,
) -> None:
    """The stated tolerance. Two ranks each take the gradient of half of every batch and average
    the two: in one process that is gradient accumulation over two micro-batches (`halves`), the
    same float32 arithmetic (halving is exact), so `exact` (halves, or a run that must equal it)
    is matched to 1e-9 step by step, on any processor: a missing average, a lost shard or a
    wrong resume shows at once. Against the whole-batch run (`expected`) the only difference is
    the summation order, which SGD at lr 0.05 with momentum amplifies from 1e-7 to about 10% by
    step 200 at a rate that depends on the processor's kernels; the accumulation run measures
    that rate where the test runs, and every record stays within 3x its largest drift.
    (Before, the baseline was the one process on 2 threads: on kernels whose sums do not depend
    on the thread count it drifted by 0, and DDP failed a 1e-4 floor.)"""
    assert got.keys() == expected.keys() == halves.keys()
    steps = sorted(expected)
    if exact is not None:
        np.testing.assert_allclose([got[s] for s in steps], [exact[s] for s in steps], rtol=1e-9)
    curves = [{"loss": [run[s] for s in steps]} for run in (got, expected, halves)]
    assert_within_measured_drift(*curves, keys=["loss"], factor=3, floor=1e-4, running=False)
    late = steps[len(steps) // 2 :]
    assert np.mean([got[s] for s in late]) == pytest.approx(
        np.mean([expected[s] for s in late]), rel=0.1
    )


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The 200 steps of one process, on the whole batch and in two micro-batches: the baselines
    of every test here (a run stopped earlier logs the same losses up to its stop)."""
    tmp_path = tmp_path_factory.mktemp("one_process")
    recipe = write(tmp_path)
    single, single_s = train(tmp_path, str(recipe), runs="one")
    halves, _ = train(tmp_path, str(recipe), "-o", "train.grad_accumulation=2", runs="halves")
    return single, single_s, halves


def up_to(records: dict[int, float], last: int) -> dict[int, float]:
    return {step: loss for step, loss in records.items() if step <= last}


@pytest.mark.e2e
@pytest.mark.numerics
def test_two_gloo_processes_take_the_steps_of_one(tmp_path, one_process):
    recipe = write(tmp_path)
    single, single_s, halves_run = one_process
    double, double_s = train(tmp_path, str(recipe), nproc=2, runs="two")
    expected, got, halves = losses(single), losses(double), losses(halves_run)
    assert sorted(got) == sorted(expected) == list(range(10, 201, 10))
    assert_same_curve(got, expected, halves, exact=halves)
    meta = json.loads((double / "meta.json").read_text())
    assert meta["processes"] == 2 and meta["status"] == "completed"
    # the same arithmetic as two micro-batches in one process (the curves match to 1e-9): the
    # same test accuracy to one image in 500; against the whole batch, only the drift measured
    # above separates them, which on some kernels moves the accuracy by more than 1%
    same_arithmetic = json.loads((halves_run / "meta.json").read_text())["evaluation"]["test"]
    assert meta["evaluation"]["test"]["accuracy"] == pytest.approx(
        same_arithmetic["accuracy"], abs=0.002
    )
    assert not list(double.glob("checkpoints/.ckpt-*"))  # rank 0 alone wrote checkpoints
    print(f"200 steps: 1 process {single_s:.1f} s, 2 processes {double_s:.1f} s (with start-up)")


@pytest.mark.e2e
@pytest.mark.numerics
# slow, so that `make test`'s second pass on other kernels leaves it out: its exact comparisons
# hold on any kernels, and its drift check is the one the test above runs on them (86 s saved)
@pytest.mark.slow
def test_a_checkpoint_resumes_in_another_number_of_processes(tmp_path, one_process):
    straight, _, halves = one_process
    expected, halved = up_to(losses(straight), 120), up_to(losses(halves), 120)
    for first, then in ((2, 1), (1, 2)):
        runs = f"runs{first}{then}"
        recipe = write(tmp_path, max_steps=60, checkpoint_every=40)
        run, _ = train(tmp_path, str(recipe), nproc=first, runs=runs)
        before = losses(run)
        assert before.keys() == set(range(10, 61, 10))
        # the first part is exactly the arithmetic of its process count
        same = halved if first == 2 else expected
        np.testing.assert_allclose(list(before.values()), [same[s] for s in before], rtol=1e-9)
        train(tmp_path, "--resume", str(run), "-o", "train.max_steps=120", nproc=then, runs=runs)
        after = losses(run)
        assert {s: after[s] for s in before} == before  # the records of the first part are kept
        assert_same_curve(after, expected, halved)


def descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = child.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found.append(int(child.parent.name))
                frontier.append(int(child.parent.name))
    return found


def stop_job(job: subprocess.Popen) -> None:
    """Kill a torchrun job and every process it started, if any still runs."""
    for pid in [*descendants(job.pid), job.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    job.wait()


def rank_of(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    values = dict(e.split(b"=", 1) for e in environ if b"=" in e)
    return values.get(b"RANK", b"").decode() or None


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds ranks through /proc")
def test_a_killed_rank_fails_the_job_fast_with_a_clear_message(tmp_path):
    recipe = write(tmp_path, max_steps=100_000, epochs=1000)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*dlab_command(), "train", str(recipe), "--runs-dir", str(tmp_path), "-q"]
    job = subprocess.Popen([*command, "--nproc", "2"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        log = tmp_path / RECIPE["name"]
        deadline = time.time() + 120
        while not any(log.glob("*/metrics.jsonl")) and time.time() < deadline:
            time.sleep(0.5)  # training has started on both ranks
        victims = [p for p in descendants(job.pid) if rank_of(p) == "1"]
        assert victims, "rank 1 not found"
        os.kill(victims[0], signal.SIGKILL)
        killed = time.perf_counter()
        _, stderr = job.communicate(timeout=120)
        assert job.returncode != 0
        assert time.perf_counter() - killed < 60  # torchrun stops rank 0 instead of letting it hang
        assert "a process failed" in stderr and "--resume" in stderr
    finally:  # a failed assertion must not leave a two-process job on both cores
        stop_job(job)
    # rank 0 marks the run failed when its collective breaks; if torchrun's SIGKILL comes first
    # the record still says running, and `dlab runs list` reads that as interrupted (no live
    # process holds the run's lock): either way the user never sees a dead job as running
    from dlab.runs import RunDir

    (folder,) = log.iterdir()
    assert RunDir(folder).summary()["status"] in ("failed", "interrupted")


def gpt_recipe(tmp_path: Path, **train) -> Path:
    rng = np.random.default_rng(0)
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "and",
        "runs",
        "into",
        "the",
        "tall",
        "forest",
    ]
    text = tmp_path / "story.txt"
    text.write_text(" ".join(rng.choice(words, 12_000)))
    recipe = {
        "name": RECIPE["name"],
        "seed": 0,
        "data": {"name": "text_file", "path": str(text), "block_size": 32, "batch_size": 16},
        "model": {"name": "gpt", "layers": 2, "heads": 2, "d_model": 32},  # tied weights
        "train": {
            "epochs": 1,
            "max_steps": 60,
            "log_every": 10,
            "checkpoint_every": 30,
            "parallel": "fsdp",
            "optimizer": {"name": "adam", "lr": 0.003},
            **train,
        },
    }
    path = tmp_path / "gpt.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.e2e
def test_fsdp_shards_a_gpt_takes_the_steps_of_one_process_and_resumes_anywhere(tmp_path):
    recipe = str(gpt_recipe(tmp_path))
    single, _ = train(tmp_path, recipe, runs="one")
    expected = losses(single)
    # Two ranks each take the gradient of half of every batch and average the two: in one
    # process that is gradient accumulation over two micro-batches, the same float32 arithmetic
    # (halving is exact). Adam's first steps, an update close to the sign of the gradient,
    # amplify the different summation order against the whole-batch run by a factor that
    # depends on the processor's kernels: that run is the measured baseline of the drift.
    halves, _ = train(tmp_path, recipe, "-o", "train.grad_accumulation=2", runs="halves")
    baseline = losses(halves)

    def assert_same_curve_as_one_process(run: Path) -> None:
        got = losses(run)
        assert got.keys() == expected.keys()
        steps = sorted(expected)
        curves = [{"loss": [r[s] for s in steps]} for r in (got, expected, baseline)]
        assert_within_measured_drift(*curves, keys=["loss"], factor=20, floor=1e-5)

    sharded, _ = train(tmp_path, recipe, nproc=2, runs="fsdp")
    got = losses(sharded)
    np.testing.assert_allclose([got[s] for s in baseline], list(baseline.values()), rtol=1e-9)
    assert_same_curve_as_one_process(sharded)
    final = json.loads((single / "meta.json").read_text())["evaluation"]["val"]
    got = json.loads((sharded / "meta.json").read_text())["evaluation"]["val"]
    assert got["loss"] == pytest.approx(final["loss"], rel=1e-4)  # the gathered final weights
    for first, then in ((2, 1), (1, 2)):  # an FSDP checkpoint resumes in one process, and back
        runs = f"resume{first}{then}"
        run, _ = train(tmp_path, recipe, "-o", "train.max_steps=30", nproc=first, runs=runs)
        train(tmp_path, "--resume", str(run), "-o", "train.max_steps=60", nproc=then, runs=runs)
        assert_same_curve_as_one_process(run)


# --- two "machines" on loopback: torchrun's c10d rendezvous, restarts after a killed worker ---


def start_nodes(tmp_path: Path, recipe: Path, runs: str, *extra: str) -> list[subprocess.Popen]:
    """`dlab train RECIPE --nnodes 2 --master 127.0.0.1:PORT` twice: the README's two-machine
    command, both "machines" on this one."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    master = f"127.0.0.1:{free_port()}"
    command = [*dlab_command(), "train", str(recipe), "--runs-dir", str(tmp_path / runs), "-q"]
    command += ["--nnodes", "2", "--master", master, *extra]
    return [
        subprocess.Popen(
            command,
            env=env,
            stdout=(tmp_path / f"{runs}-node{n}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for n in range(2)
    ]


def run_nodes(tmp_path: Path, recipe: Path, runs: str, *extra: str) -> Path:
    """Two nodes through to a successful end; the one run folder they wrote."""
    nodes = start_nodes(tmp_path, recipe, runs, *extra)
    try:
        assert [n.wait(timeout=240) for n in nodes] == [0, 0]
    finally:
        for n in nodes:
            stop_job(n)
    (run,) = (tmp_path / runs / RECIPE["name"]).iterdir()
    return run


def kill_rank_after(nodes: list[subprocess.Popen], log: Path, step: int, rank: str = "1") -> None:
    """SIGKILL the worker of `rank` once the run has logged `step` (between two checkpoints)."""
    deadline = time.time() + 150
    while time.time() < deadline:
        logged = list(log.glob("*/metrics.jsonl"))
        with contextlib.suppress(json.JSONDecodeError):  # a line being written
            if logged and step in losses(logged[0].parent):
                break
        assert all(n.poll() is None for n in nodes), "a node ended before the kill"
        time.sleep(0.05)
    else:
        raise AssertionError(f"step {step} not reached in 150 s")
    victims = [p for n in nodes for p in descendants(n.pid) if rank_of(p) == rank]
    assert victims, f"rank {rank} not found"
    os.kill(victims[0], signal.SIGKILL)


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds ranks through /proc")
def test_two_nodes_restart_after_a_killed_worker_and_end_as_if_never_stopped(tmp_path, one_process):
    """Two nodes (c10d rendezvous) take the steps of one process that accumulates two halves,
    to 1e-9 (the DDP test's stated tolerance, same arithmetic); with `--max-restarts 1`, rank 1
    SIGKILLed between two checkpoints makes torchrun restart both nodes, every rank resumes from
    the last checkpoint, and the final weights equal the uninterrupted run's bit for bit (the
    resumed steps repeat the same float32 arithmetic in the same order)."""
    recipe = write(tmp_path, max_steps=120, checkpoint_every=30)
    straight = run_nodes(tmp_path, recipe, "straight")
    got, expected = losses(straight), up_to(losses(one_process[2]), 120)
    assert sorted(got) == list(range(10, 121, 10))
    np.testing.assert_allclose([got[s] for s in expected], list(expected.values()), rtol=1e-9)
    assert json.loads((straight / "meta.json").read_text())["processes"] == 2

    nodes = start_nodes(tmp_path, recipe, "killed", "--max-restarts", "1")
    try:
        kill_rank_after(nodes, tmp_path / "killed" / RECIPE["name"], step=40)
        killed = time.perf_counter()
        assert [n.wait(timeout=240) for n in nodes] == [0, 0]
        print(f"restarted and finished {time.perf_counter() - killed:.1f} s after the kill")
    finally:
        for n in nodes:
            stop_job(n)
    (resumed,) = (tmp_path / "killed" / RECIPE["name"]).iterdir()  # the same run, continued
    logs = [(tmp_path / f"killed-node{n}.log").read_text() for n in range(2)]
    assert sum("resumes" in text and "from its last checkpoint" in text for text in logs) == 1
    assert (resumed / "model.safetensors").read_bytes() == (
        straight / "model.safetensors"
    ).read_bytes()
    assert losses(resumed) == got
    assert json.loads((resumed / "meta.json").read_text())["status"] == "completed"


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds ranks through /proc")
def test_two_nodes_without_restarts_left_both_end_with_one_line(tmp_path):
    """No restarts: a killed worker ends the job on both nodes within seconds, each with dlab's
    one line; the same command started again continues the run from its last checkpoint."""
    recipe = write(tmp_path, max_steps=120, checkpoint_every=30)
    nodes = start_nodes(tmp_path, recipe, "runs")
    try:
        kill_rank_after(nodes, tmp_path / "runs" / RECIPE["name"], step=40)
        killed = time.perf_counter()
        codes = [n.wait(timeout=120) for n in nodes]
        elapsed = time.perf_counter() - killed
    finally:
        for n in nodes:
            stop_job(n)
    assert all(code != 0 for code in codes)
    assert elapsed < 60  # neither node waits out the collective timeout
    for n in range(2):
        last = (tmp_path / f"runs-node{n}.log").read_text().strip().splitlines()[-1]
        assert last.startswith("dlab: error: train --nproc 1 --nnodes 2: a process failed"), last
        assert "start the same command on every node again to continue it" in last
    run = run_nodes(tmp_path, recipe, "runs")  # one folder: continued, not started over
    assert json.loads((run / "meta.json").read_text())["status"] == "completed"
    assert sorted(losses(run)) == list(range(10, 121, 10))
    logs = [(tmp_path / f"runs-node{n}.log").read_text() for n in range(2)]
    assert sum("from its last checkpoint" in text for text in logs) == 1  # rank 0's node says so
