"""MLflow tracking against a real `mlflow server` (SQLite backend store, artifacts served by the
server from a local folder), started on loopback for these tests and stopped after them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow  # the Makefile installs the tracking extra: its absence is a failure, not a skip
import mlflow.pytorch
import numpy as np
import pytest
import torch
from listening import free_port, start_listening

import dlab
from dlab.errors import DlabError, TrainingInterrupted
from dlab.runs import RunDir
from dlab.tracking import parameters
from dlab.training.callbacks import Callback
from dlab.tune import tune

pytestmark = pytest.mark.slow

SMALL = {
    "data": {"name": "mnist_sample", "batch_size": 100},
    "model": {"name": "cnn", "channels": [4, 8], "hidden": 16},
    "train": {"epochs": 2, "log_every": 5, "checkpoint_every": 20},
}


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """`mlflow server` on a free loopback port; its URI."""
    folder = tmp_path_factory.mktemp("mlflow")
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        (folder / "artifacts").as_uri(),
        "--host",
        "127.0.0.1",
        "--workers",
        "1",
        "--port",
    ]
    started: list[subprocess.Popen] = []
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    try:
        port = start_listening(lambda p: [*command, str(p)], env, started, folder)
        yield f"http://127.0.0.1:{port}"
    finally:
        for process in started:
            process.terminate()
        for process in started:
            process.wait(timeout=30)


def _recipe(name: str, uri: str, **train) -> dict:
    recipe = {"name": name, **SMALL, "train": {**SMALL["train"], **train}}
    recipe["train"]["loggers"] = ["tensorboard", "mlflow"]
    recipe["train"]["mlflow"] = {"tracking_uri": uri}
    return recipe


def test_parameters_name_every_recipe_field_by_its_dotted_path():
    flat = parameters({"train": {"optimizer": {"name": "adam", "lr": 0.01}, "tags": {}}, "seed": 0})
    assert flat == {
        "train.optimizer.name": "adam",
        "train.optimizer.lr": "0.01",
        "train.tags": "{}",
        "seed": "0",
    }


def test_a_run_and_its_resume_are_one_mlflow_run_with_params_metrics_artifacts_and_model(
    tracking_server, tmp_path
):
    from mlflow import MlflowClient

    class Interrupt(Callback):
        def on_step_end(self, trainer):
            if trainer.state.step == 60:  # in the second epoch, after the checkpoint at step 40
                os.kill(os.getpid(), signal.SIGINT)

    recipe = _recipe("tracked", tracking_server)
    with pytest.raises(TrainingInterrupted):
        dlab.train(recipe, runs_dir=tmp_path, progress=False, callbacks=[Interrupt()])
    (path,) = (tmp_path / "tracked").iterdir()
    first = RunDir(path).meta["mlflow"]
    client = MlflowClient(tracking_uri=tracking_server)
    assert client.get_run(first["run_id"]).info.status == "KILLED"

    run = dlab.train(recipe, runs_dir=tmp_path, progress=False, resume=path)
    meta = run.dir.meta["mlflow"]
    assert meta["run_id"] == first["run_id"]  # continued, not a second run
    experiment = client.get_experiment_by_name("tracked")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_id == meta["run_id"] and found.info.status == "FINISHED"

    # parameters: the flattened resolved recipe; tags: what it trains, on what
    assert found.data.params["train.optimizer.name"] == "adam"
    assert found.data.params["model.channels"] == "[4, 8]"
    assert found.data.params["data.batch_size"] == "100"
    assert len(found.data.params) == len(parameters(run.recipe.to_dict()))
    tags = found.data.tags
    assert (tags["dlab.model"], tags["dlab.data"], tags["dlab.task"]) == (
        "cnn",
        "mnist_sample",
        "classification",
    )
    assert tags["dlab.run_dir"] == str(run.path.resolve())

    # metrics: every epoch and logged step, once per step despite the interruption
    epochs = [r for r in run.history.records]
    history = client.get_metric_history(meta["run_id"], "epoch/val_accuracy")
    assert sorted(m.step for m in history) == [r["step"] for r in epochs]
    last = max(history, key=lambda m: m.step)
    assert last.value == pytest.approx(epochs[-1]["val_accuracy"])
    steps = client.get_metric_history(meta["run_id"], "step/loss")
    logged = [r["step"] for r in run.dir.metrics() if r["kind"] == "step"]
    assert sorted({m.step for m in steps}) == sorted(set(logged)) and len(logged) >= 10

    # artifacts: the report, recipe, meta and the evaluation figure
    names = {a.path for a in client.list_artifacts(meta["run_id"])}
    assert {"report.html", "recipe.yaml", "meta.json", "metrics.jsonl", "eval"} <= names
    figures = {a.path for a in client.list_artifacts(meta["run_id"], "eval")}
    assert "eval/test_confusion.png" in figures

    # the model: MLflow's own loader gives back the same function
    assert tags["dlab.model_uri"] == meta["model_uri"]
    mlflow.set_tracking_uri(tracking_server)
    try:
        loaded = mlflow.pytorch.load_model(meta["model_uri"])
    finally:
        mlflow.set_tracking_uri(None)
    images = torch.from_numpy(np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32))
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), run.model.eval()(images))
    assert meta["model_format"] == "pt2"  # torch.export: nothing pickled to trust on loading


def test_a_tracking_server_that_is_down_fails_at_start_in_one_line(tmp_path):
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(DlabError) as info:
        dlab.train(_recipe("down", nobody), runs_dir=tmp_path, progress=False)
    message = str(info.value)
    assert message.startswith(
        f"train.mlflow.tracking_uri: no MLflow tracking server answers at {nobody} ("
    )
    assert "\n" not in message and "take mlflow out of train.loggers" in message
    assert not (tmp_path / "down").exists()  # nothing was started


def test_tuning_trials_are_nested_runs_under_their_study(tracking_server, tmp_path):
    from mlflow import MlflowClient

    recipe = _recipe("tuned", tracking_server, epochs=1)
    recipe["tune"] = {"space": {"train.optimizer.lr": {"choice": [0.001, 0.003]}}, "trials": 2}
    result = tune(recipe, runs_dir=tmp_path)
    client = MlflowClient(tracking_uri=tracking_server)
    experiment = client.get_experiment_by_name("tuned")  # the recipe's, not each trial's name
    runs = client.search_runs([experiment.experiment_id])
    (study,) = [r for r in runs if r.data.tags.get("dlab.study") == "tuned"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == study.info.run_id]
    trials = sorted(r.data.tags["dlab.trial"] for r in children if "dlab.trial" in r.data.tags)
    assert trials == ["0", "1"]
    (best,) = [r for r in children if r.data.tags.get("dlab.best_of_study") == "tuned"]
    assert best.data.tags["dlab.run_dir"] == str(result.best_run.path.resolve())
    assert len(runs) == 4  # the study, two trials and the best, nothing else
