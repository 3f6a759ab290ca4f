"""dlab as a user installs it: the sdist and the wheel built as a release would build them, the
wheel installed into a fresh virtual environment outside the checkout, and the verbs run there.

The fresh environment installs only the core requirements (torch's CPU build first, as the
Makefile does), from the package index or pip's cache: about a minute here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import ROOT

import dlab

pytestmark = pytest.mark.timeout(1200)

SHIPPED = ("dlab/recipes/mnist_cnn.yaml", "dlab/lessons/01-linear-and-activation.md")
SHIPPED += ("dlab/serve/static/index.html", "dlab/py.typed")


def _run(argv: list, cwd: Path, env: dict, expect: int = 0) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == expect, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_the_wheel_installs_outside_the_checkout_and_its_verbs_work(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1", MPLBACKEND="Agg")
    dist, source = tmp_path / "dist", tmp_path / "source"
    # from the files git knows (as a clean clone has them): a leftover *.egg-info in the checkout
    # would otherwise lend the sdist the file list of an earlier build
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT, env)
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    # no flags: the sdist first, then the wheel built from the unpacked sdist, so a file the sdist
    # forgot is missing from the wheel too; no isolation: this environment's setuptools, offline
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, source], tmp_path, env)
    version = dlab.__version__
    wheel = dist / f"dlab_toolkit-{version}-py3-none-any.whl"
    sdist = dist / f"dlab_toolkit-{version}.tar.gz"
    assert sorted(p.name for p in dist.iterdir()) == sorted([wheel.name, sdist.name])
    assert "PASSED" in _run([sys.executable, "-m", "twine", "check", "--strict", wheel, sdist], tmp_path, env)

    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(SHIPPED) <= names
    recipes = {n for n in names if n.startswith("dlab/recipes/")}
    assert len(recipes) == len(list((ROOT / "src/dlab/recipes").glob("*.yaml")))
    assert not {n.split("/")[0] for n in names} & {"tests", "benchmarks", "examples"}
    with tarfile.open(sdist) as archive:
        members = {m.name.split("/", 1)[1] for m in archive.getmembers() if "/" in m.name}
    assert {f"src/{s}" for s in SHIPPED} | {"pyproject.toml", "README.md"} <= members

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path, env)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q"]
    _run([*pip, f"torch=={torch.__version__.split('+')[0]}"], tmp_path, env)  # the CPU build
    _run([*pip, wheel], tmp_path, env)
    work = tmp_path / "work"  # no recipes/ here and nothing of the checkout on the path
    work.mkdir()
    env["DLAB_RUNS_DIR"] = str(work / "runs")
    dlab_command = venv / "bin" / "dlab"

    where = _run([venv / "bin" / "python", "-c", "import dlab; print(dlab.__file__)"], work, env)
    assert str(venv) in where and str(ROOT) not in where
    assert _run([dlab_command, "--version"], work, env).strip() == f"dlab {version} (dlab-toolkit)"
    listed = _run([dlab_command, "list", "recipes"], work, env)
    assert "mnist_cnn" in listed and "shakespeare_char_gpt" in listed
    assert _run([dlab_command, "lesson", "1"], work, env).startswith(
        "# 1. The linear layer and its activation"
    )
    trained = _run([dlab_command, "train", "demo", "-o", "train.epochs=1", "-q"], work, env)
    runs = list((work / "runs" / "demo").iterdir())
    assert len(runs) == 1 and f"run {runs[0]}" in trained
    evaluated = _run([dlab_command, "evaluate", runs[0]], work, env)
    assert "accuracy" in evaluated
    # the core install has no extras: a verb that needs one says which to install
    refused = _run([dlab_command, "tune", "sst2_lstm"], work, env, expect=2)
    assert refused.strip() == 'dlab: error: tune needs optuna: pip install "dlab-toolkit[tune]"'
