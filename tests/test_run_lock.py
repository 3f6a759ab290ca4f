"""One run folder, one writer: a second training of a run is refused naming the holder, and a
holder killed with SIGKILL leaves the run resumable and listed as interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import dlab
from dlab.errors import RunError
from dlab.runs import RunDir

RECIPE = {
    "name": "locked",
    "data": {"name": "mnist_sample", "limit": 200, "batch_size": 50},
    "model": {"name": "mlp", "hidden": [8]},
    "train": {"epochs": 1},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return dlab.train(RECIPE, runs_dir=tmp_path_factory.mktemp("runs"), progress=False)


def test_a_second_process_cannot_train_a_run_in_use(trained):
    with trained.dir.lock():  # held as another process would hold it (its own descriptor)
        assert trained.dir.in_use()
        with pytest.raises(
            RunError, match=f"in use by another dlab process \\(PID {os.getpid()}\\)"
        ):
            dlab.train(None, ["train.epochs=2"], resume=trained.path, progress=False)
    assert not trained.dir.in_use()
    resumed = dlab.train(None, ["train.epochs=2"], resume=trained.path, progress=False)
    assert resumed.dir.meta["epochs"] == 2


def test_a_killed_holder_leaves_the_run_resumable_and_interrupted(trained):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from dlab.runs import RunDir\n"
            "with RunDir(sys.argv[1]).lock():\n    print('held', flush=True); time.sleep(60)",
            str(trained.path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    trained.dir.update_meta(status="running")
    assert trained.dir.in_use() and trained.dir.summary()["status"] == "running"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    deadline = time.monotonic() + 5
    while trained.dir.in_use() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not trained.dir.in_use()  # the operating system let go with the process
    assert trained.dir.summary()["status"] == "interrupted"
    with trained.dir.lock():  # and anyone may take it now
        pass
    assert RunDir(trained.path).meta["status"] == "running"  # the record itself is untouched
