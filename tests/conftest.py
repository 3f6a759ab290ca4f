"""Shared fixtures. Real data comes from ../shared/data (or $DLAB_TEST_DATA) through `shared_data`."""

from __future__ import annotations

import os

# Before torch loads anywhere in the test process (see dlab.runtime).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


def pytest_collection_modifyitems(config, items):
    """Every test not marked e2e or slow is a unit test (`pytest -m unit`)."""
    for item in items:
        if "e2e" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.e2e)
        if not any(item.get_closest_marker(m) for m in ("e2e", "slow")):
            item.add_marker(pytest.mark.unit)


def _shared_data() -> Path | None:
    env = os.environ.get("DLAB_TEST_DATA")
    candidates = [Path(env)] if env else [ROOT.parent / "shared" / "data", ROOT / "shared" / "data"]
    return next(
        (c for c in candidates if (c / "MANIFEST.md").is_file() or (c / "mnist").is_dir()), None
    )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real data sets for tests; skips the test where it is absent."""
    found = _shared_data()
    if found is None:
        pytest.skip("real data not found: put it in ../shared/data or set DLAB_TEST_DATA")
    return found


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """An empty, private DLAB_DATA_DIR."""
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv("DLAB_DATA_DIR", str(folder))
    return folder


@pytest.fixture
def real_data_dir(shared_data, monkeypatch) -> Path:
    """DLAB_DATA_DIR pointing at the real data (read-only)."""
    monkeypatch.setenv("DLAB_DATA_DIR", str(shared_data))
    return shared_data


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    """A private runs folder (also $DLAB_RUNS_DIR for subprocesses)."""
    folder = tmp_path / "runs"
    monkeypatch.setenv("DLAB_RUNS_DIR", str(folder))
    return folder


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """dlab chooses thread counts; keep one test's choice from leaking into the next."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def make_blobs(
    n: int = 256, features: int = 8, classes: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A small, learnable classification problem: Gaussian blobs."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    x = centers[y] + rng.normal(0, 1, size=(n, features))
    return x.astype(np.float32), y.astype(np.int64)


def dlab_command() -> list[str]:
    """How tests start the CLI in a subprocess (the venv's Python, whatever the PATH)."""
    return [sys.executable, "-m", "dlab.cli"]
