"""Shared fixtures. Real data comes from ../shared/data (or $DLAB_TEST_DATA) through `shared_data`."""

from __future__ import annotations

import os

# OpenMP's wait policy, before torch loads anywhere in the test process: importing dlab sets it
# (dlab.runtime) and loads no torch.
import dlab

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# torch.compile's inductor keeps compiled kernels and precompiled headers under /tmp for the
# whole machine, keyed without the CPU capability (torch 2.13): a header built while
# ATEN_CPU_CAPABILITY=avx2 aborted the next default run (SIGABRT, the whole pytest process), and
# make test's second kernel pass failed to compile against the first pass's header. Each test
# session therefore compiles into a folder of its own, without precompiled headers.
os.environ.setdefault("TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS", "0")
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    import atexit
    import shutil as _shutil
    import tempfile

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="dlab-inductor-")
    atexit.register(_shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "src" / "dlab" / "recipes"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def requirement_names(requirements: list[str]) -> set[str]:
    """The normalised distribution names of requirement lines ('torch>=2.3' -> 'torch')."""
    return {
        re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-")
        for r in requirements
    }


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


def synthetic_ratings(path: Path, users=60, items=45, per_user=24, seed=0) -> Path:
    """A ratings CSV from a rank-2 model with user and item biases, rounded to 1-5 stars."""
    rng = np.random.default_rng(seed)
    p, q = rng.normal(0, 0.8, (users, 2)), rng.normal(0, 0.8, (items, 2))
    bu, bi = rng.normal(0, 0.5, users), rng.normal(0, 0.7, items)
    lines = ["user,item,rating,timestamp"]
    for u in range(users):
        for t, i in enumerate(rng.choice(items, per_user, replace=False)):
            stars = np.clip(np.round(3.4 + bu[u] + bi[i] + p[u] @ q[i]), 1, 5)
            lines.append(f"user{u},film{i},{int(stars)},{1000 + t}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def ratings_file(tmp_path_factory) -> Path:
    return synthetic_ratings(tmp_path_factory.mktemp("ratings") / "ratings.csv")


@pytest.fixture(scope="session")
def rating_run(tmp_path_factory, ratings_file):
    """Biased MF trained on `ratings_file` (rating prediction, random split)."""

    recipe = {
        "name": "toy_rating",
        "data": {"name": "ratings_csv", "path": str(ratings_file), "timestamp": "timestamp"},
        "model": {"name": "mf", "dim": 8, "l2": 0.02},
        "train": {
            "epochs": 25,
            "optimizer": {"name": "adam", "lr": 0.02},
            "loss": "mse",
            "metrics": ["rmse", "mae"],
        },
    }
    runs = tmp_path_factory.mktemp("rating_runs")
    return dlab.train(recipe, runs_dir=runs, progress=False, report=False)


def dlab_command() -> list[str]:
    """How tests start the CLI in a subprocess (the venv's Python, whatever the PATH)."""
    return [sys.executable, "-m", "dlab.cli"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless Chromium: installed here if missing and possible, else the test skips."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
            shell=True,
            capture_output=True,
            timeout=900,
        )
        found = shutil.which("chromium")
    if not found:
        pytest.skip(
            "Debian's chromium is not installed and could not be installed here (needs root and apt)"
        )
    return found


@pytest.fixture(scope="session")
def postgres_url():
    """A throw-away PostgreSQL server on loopback for the session (tests/pg_server.py)."""
    from pg_server import binaries, postgres_server

    if binaries() is None:
        pytest.skip("PostgreSQL's server binaries are not installed (.ci/run installs them)")
    with postgres_server() as url:
        yield url


# --- small trained runs shared by the report, compression, export and serving tests ---


def train_small(tmp_path_factory, name: str, recipe: dict):
    """Train a small recipe into its own runs folder (quietly)."""

    return dlab.train(
        {"name": name, **recipe}, runs_dir=tmp_path_factory.mktemp(name), progress=False
    )


@pytest.fixture(scope="session")
def image_run(tmp_path_factory):
    return train_small(
        tmp_path_factory,
        "mnist_cnn",
        {
            "data": {"name": "mnist_sample"},
            "model": {"name": "cnn", "channels": [4, 8], "hidden": 32},
            "train": {"epochs": 2},
        },
    )


@pytest.fixture
def own_image_run(image_run, tmp_path):
    """A private copy of `image_run`, for tests that write into a run (an export, a report):
    the session's run stays as trained for every other test."""

    copy = tmp_path / "runs" / image_run.path.parent.name / image_run.path.name
    shutil.copytree(image_run.path, copy)
    return dlab.load(copy)


def write_reviews_and_series(folder: Path) -> None:
    """reviews.csv (120 short reviews, two labels) and series.csv (200 steps of a sine): also
    the data of the old run folders in tests/fixtures, so they must not change."""
    good, bad = (
        ["a wonderful moving film", "great acting and story", "i loved it"],
        ["a dull boring mess", "terrible weak plot", "i hated it"],
    )
    rows = "\n".join(
        f"{(good if i % 2 else bad)[i % 3]},{'pos' if i % 2 else 'neg'}" for i in range(120)
    )
    (folder / "reviews.csv").write_text("text,label\n" + rows + "\n")
    (folder / "series.csv").write_text(
        "v\n" + "".join(f"{np.sin(i / 4):.4f}\n" for i in range(200))
    )


@pytest.fixture(scope="session")
def text_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    write_reviews_and_series(folder)
    (folder / "story.txt").write_text("To be, or not to be, that is the question. " * 120)
    (folder / "pairs.tsv").write_text("".join(f"the cat {i}\tdie Katze {i}\n" for i in range(80)))
    return folder


@pytest.fixture(scope="session")
def text_run(tmp_path_factory, text_folder):
    return train_small(
        tmp_path_factory,
        "reviews",
        {
            "data": {
                "name": "text_csv",
                "path": str(text_folder / "reviews.csv"),
                "batch_size": 16,
            },
            "model": {
                "name": "transformer_classifier",
                "d_model": 32,
                "heads": 2,
                "layers": 1,
                "ff": 64,
            },
            "train": {"epochs": 3},
        },
    )


@pytest.fixture(scope="session")
def lstm_text_run(tmp_path_factory, text_folder):
    return train_small(
        tmp_path_factory,
        "reviews_lstm",
        {
            "data": {
                "name": "text_csv",
                "path": str(text_folder / "reviews.csv"),
                "batch_size": 16,
            },
            "model": {
                "name": "lstm",
                "embedding": 16,
                "hidden": 24,
                "layers": 1,
                "bidirectional": True,
            },
            "train": {"epochs": 3},
        },
    )


@pytest.fixture(scope="session")
def gpt_run(tmp_path_factory, text_folder):
    return train_small(
        tmp_path_factory,
        "story_gpt",
        {
            "data": {
                "name": "text_file",
                "path": str(text_folder / "story.txt"),
                "block_size": 32,
                "batch_size": 16,
            },
            "model": {"name": "gpt", "layers": 2, "heads": 2, "d_model": 32},
            "train": {"epochs": 2, "metrics": ["accuracy", "perplexity"]},
        },
    )


# --- sounds: two classes of whistle, and a small model trained on them ---


def tone(hz: float, seconds: float = 0.5, rate: int = 8000, seed: int = 0) -> np.ndarray:
    """A sine at `hz` with a little noise, as float samples in [-1, 1]."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.02, len(t))
    return (0.5 * np.sin(2 * np.pi * hz * t) + noise).astype(np.float32)


@pytest.fixture(scope="session")
def sound_folder(tmp_path_factory):
    """An audio_folder: a low (300 Hz) and a high (1500 Hz) whistle of varying pitch and length."""
    from dlab.data.audio import write_wav

    root = tmp_path_factory.mktemp("sounds")
    rng = np.random.default_rng(0)
    for name, base in (("low", 300), ("high", 1500)):
        (root / name).mkdir()
        for i in range(30):
            hz, seconds = base * rng.uniform(0.8, 1.2), rng.uniform(0.3, 0.8)
            write_wav(root / name / f"{i}.wav", tone(hz, seconds, seed=i), 8000)
    return root


@pytest.fixture(scope="session")
def sound_run(tmp_path_factory, sound_folder):
    return train_small(
        tmp_path_factory,
        "whistles",
        {
            "data": {"name": "audio_folder", "path": str(sound_folder), "frames": 90},
            "model": {"name": "cnn1d", "channels": [16, 16]},
            "train": {"epochs": 6, "optimizer": {"name": "adam", "lr": 0.01}},
        },
    )
