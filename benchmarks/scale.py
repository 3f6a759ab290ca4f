"""Scale and privacy on real MNIST: DDP vs one process, federated vs centralised, DP-SGD vs not.

python -m benchmarks scale [ddp] [federated] [privacy]

- ddp: the seed CNN, 300 steps at global batch 64, in 1 process (all cores) and in 2 gloo
  processes (one thread each): wall time and the loss curves' largest relative gap.
- federated: a small CNN over 10 Flower clients, IID and Dirichlet(alpha) 1.0 and 0.1, 10 rounds
  of one local epoch, global validation accuracy per round, and the same recipe trained
  centrally for 10 epochs.
- privacy: a small tanh CNN with DP-SGD (Opacus) at epsilon 1, 3 and 8 (delta 1e-5) and without.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import markdown_table, real_data_dir, write_results

SMALL_CNN = {"name": "cnn", "channels": [16, 32], "padding": 1, "pool": "each", "hidden": 32}


def recipe(name: str, model: dict, train: dict, batch_size: int) -> dict:
    return {
        "name": name,
        "seed": 0,
        "data": {"name": "mnist", "batch_size": batch_size, "val_size": 5000},
        "model": model,
        "train": {"checkpoint_every": 10**6, **train},
    }


def losses(run: Path) -> dict[int, float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if r["kind"] == "step"}


def ddp(runs: Path) -> list[dict]:
    path = runs / "ddp.yaml"
    train = {
        "epochs": 1,
        "max_steps": 300,
        "log_every": 10,
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
    }
    path.write_text(yaml.safe_dump(recipe("ddp_seed_cnn", {"name": "cnn"}, train, 64)))
    rows, curves = [], {}
    for nproc in (1, 2, 1, 2):  # alternating, twice
        started = time.perf_counter()
        folder = runs / f"ddp{nproc}-{len(rows)}"
        command = [
            sys.executable,
            "-m",
            "dlab",
            "train",
            str(path),
            "-q",
            "--runs-dir",
            str(folder),
        ]
        subprocess.run([*command, "--nproc", str(nproc)], check=True)
        seconds = time.perf_counter() - started
        (run,) = (folder / "ddp_seed_cnn").iterdir()
        meta = json.loads((run / "meta.json").read_text())
        curves[nproc] = losses(run)
        rows.append(
            {
                "suite": "ddp",
                "processes": nproc,
                "wall_s": round(seconds, 1),
                "train_s": meta["train_seconds"],
                "test_accuracy": round(meta["evaluation"]["test"]["accuracy"], 4),
            }
        )
        print(markdown_table(rows[-1:], list(rows[-1])), flush=True)
    one, two = curves[1], curves[2]
    gaps = [abs(two[s] - one[s]) / one[s] for s in one]
    early = [abs(two[s] - one[s]) / one[s] for s in one if s <= 50]
    for row in rows:
        row["loss_gap_max"] = round(max(gaps), 5)
        row["loss_gap_first_50_steps"] = float(f"{max(early):.2e}")
    return rows


def federated(runs: Path) -> list[dict]:
    from dlab.federated import FederatedSettings, federate

    train = {"epochs": 1, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}
    base = recipe("federated_cnn", SMALL_CNN, train, 64)
    rows = []
    central = None
    for alpha in (None, 1.0, 0.1):
        settings = FederatedSettings(clients=10, rounds=10, alpha=alpha, central=central is None)
        started = time.perf_counter()
        run = federate(base, settings=settings, runs_dir=runs, progress=False)
        seconds = time.perf_counter() - started
        meta = run.dir.meta
        central = central or meta["central"]
        rounds = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
        row = {
            "suite": "federated",
            "partition": f"Dirichlet({alpha})" if alpha else "IID",
            **{f"round_{r['epoch']}": round(r["val_accuracy"], 4) for r in rounds},
            "test_accuracy": round(meta["evaluation"]["test"]["accuracy"], 4),
            "central_test_accuracy": round(central["accuracy"], 4),
            "wall_s": round(seconds, 1),
        }
        rows.append(row)
        print(markdown_table([row], list(row)), flush=True)
    return rows


def privacy(runs: Path) -> list[dict]:
    import dlab

    model = {**SMALL_CNN, "activation": "tanh"}
    rows = []
    for epsilon in (None, 1.0, 3.0, 8.0):
        train = {"epochs": 8, "log_every": 50, "optimizer": {"name": "sgd", "lr": 2.0}}
        if epsilon is None:  # the same model and schedule without clipping and noise
            train["optimizer"] = {"name": "sgd", "lr": 0.1, "momentum": 0.9}
        else:
            train["privacy"] = {"epsilon": epsilon, "delta": 1e-5, "max_grad_norm": 1.0}
        started = time.perf_counter()
        run = dlab.train(
            recipe("dp_cnn", model, train, 256), runs_dir=runs, progress=False, report=False
        )
        meta = run.dir.meta
        row = {
            "suite": "privacy",
            "target_epsilon": epsilon or "none",
            "epsilon_spent": round(meta["privacy"]["epsilon_spent"], 3) if epsilon else "none",
            "noise_multiplier": round(meta["privacy"]["noise_multiplier"], 3) if epsilon else 0,
            "test_accuracy": round(meta["evaluation"]["test"]["accuracy"], 4),
            "wall_s": round(time.perf_counter() - started, 1),
        }
        rows.append(row)
        print(markdown_table([row], list(row)), flush=True)
    return rows


def main(args: list[str]) -> None:
    os.environ["DLAB_DATA_DIR"] = str(real_data_dir())
    chosen = args or ["ddp", "federated", "privacy"]
    suites = {"ddp": ddp, "federated": federated, "privacy": privacy}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as runs:
        for name in chosen:
            rows += suites[name](Path(runs))
    path = write_results("scale", rows, key="suite")
    for name in chosen:
        mine = [r for r in rows if r["suite"] == name]
        print(markdown_table(mine, list(mine[0])))
    print(f"\nwritten to {path}")
