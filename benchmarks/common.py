"""Shared pieces of the benchmark suites: where real data is, the hardware, results files, tables."""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

import dlab  # noqa: F401  (sets OpenMP's wait policy before torch loads: see dlab.runtime)

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "src" / "dlab" / "recipes"  # the recipes that ship inside the package
RESULTS = Path(__file__).resolve().parent / "results"


def real_data_dir() -> Path:
    """The real data sets: $DLAB_DATA_DIR, else ../shared/data beside the checkout."""
    for candidate in (os.environ.get("DLAB_DATA_DIR"), ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "mnist").is_dir():
            return Path(candidate)
    raise SystemExit("benchmarks need real data: set DLAB_DATA_DIR or put it in ../shared/data")


def synchronize(device: Any) -> None:
    """Wait for the device's queued work, so a wall-clock reading covers it (no-op on the CPU)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def hardware(device: Any = None) -> dict[str, Any]:
    """What the numbers were measured on (with the GPU's name when `device` is one)."""
    import torch

    from dlab import runtime

    info = runtime.hardware_summary(torch.device(device) if device is not None else None)
    info["host"] = socket.gethostname()
    info["platform"] = platform.platform()
    return info


def provenance() -> dict[str, Any]:
    """What every results row carries: the code (git commit, "+dirty" with uncommitted changes
    to the package, the suites or the recipes), when, torch's version and the thread policy."""
    import subprocess

    import torch

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "src", "benchmarks/*.py"):  # recipes live in src
        commit += "+dirty"
    return {
        "commit": commit,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT", "unset"),
    }


def write_results(
    suite: str, rows: list[dict[str, Any]], key: str | None = None, device: Any = None
) -> Path:
    """Write benchmarks/results/<host>-<date>-<suite>.json and return its path.

    Every row gets the run's provenance (commit, date, torch, threads) and the file names the
    hardware. With `key`, rows of an earlier run of the same day are kept unless this run
    measured the same key again, and only if they were measured on the same clean commit and
    the same processor: a table never mixes code versions or machines (several invocations of
    one suite at one commit make one file; after a change, the file holds only the new run's
    rows).
    """
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{socket.gethostname()}-{time.strftime('%Y%m%d')}-{suite}.json"
    stamp, machine = provenance(), hardware(device)
    # a row's own measurement wins: the overhead rows' `threads` is what their runners used
    rows = [{**row, **{k: v for k, v in stamp.items() if k not in row}} for row in rows]
    if key is not None and path.is_file() and not stamp["commit"].endswith("+dirty"):
        fresh = {row[key] for row in rows}
        before = json.loads(path.read_text())
        same_machine = before.get("hardware", {}).get("cpu") == machine.get("cpu")
        rows = [
            row
            for row in before.get("rows", [])
            if row.get(key) not in fresh and row.get("commit") == stamp["commit"] and same_machine
        ] + rows
    info = {"suite": suite, "hardware": machine, "rows": rows}
    path.write_text(json.dumps(info, indent=2) + "\n")
    return path


def with_peak_memory(call: Any) -> dict[str, Any]:
    """`call()`'s row with `peak_rss_mib`: this process's peak resident memory while it ran
    (the libraries and data already loaded included)."""
    from dlab import runtime

    runtime.reset_peak_memory()
    row = call()
    row["peak_rss_mib"] = runtime.resident_peak_mib()
    return row


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A markdown table of `rows` restricted to `columns`."""
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    for row in rows:
        cells = [
            f"{row[c]:.4g}" if isinstance(row.get(c), float) else str(row.get(c, ""))
            for c in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def latency_summary(latencies: list[float], statuses: Any, elapsed: float) -> dict[str, Any]:
    """Status counts (5xx apart), p50/p90/p99 latency in ms and throughput of a load test."""
    import numpy as np

    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(latencies),
        "ok": statuses.get(200, 0),
        "5xx": sum(n for s, n in statuses.items() if isinstance(s, int) and s >= 500),
        "errors": {str(s): n for s, n in statuses.items() if s != 200},
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "throughput_rps": round(len(latencies) / elapsed, 1),
    }
