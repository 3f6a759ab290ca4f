"""Experiment tracking in MLflow (`train.loggers: [tensorboard, mlflow]`).

A run becomes one MLflow run: its resolved recipe as parameters (flattened: `train.optimizer.lr`),
every step and epoch record as metrics (`step/train_loss`, `epoch/val_accuracy`, as TensorBoard
names them), tags (model, data, task, the git commit of the working folder when it is a
repository), and at the end its report, recipe, meta.json, evaluation figures and the final model
as an MLflow PyTorch model. A resumed run continues the same MLflow run (its id is kept in
meta.json); tuning trials are nested under one run per study.

The client is MLflow's own `MlflowClient` with explicit run ids, so nothing here depends on, or
changes, MLflow's "active run". A tracking server that does not answer fails the run before any
data is loaded, in one line.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlab.errors import DlabError, DlabWarning, RecipeError, TrainingInterrupted
from dlab.extras import require
from dlab.recipe import flatten
from dlab.training.callbacks import Callback, logged_numbers

if TYPE_CHECKING:
    from dlab.api import Run
    from dlab.data.bundle import DataBundle
    from dlab.recipe import Recipe
    from dlab.recipe.tracking import MlflowSettings
    from dlab.runs import RunDir
    from dlab.training.trainer import Trainer

# tags that every run created inside `nested_under` gets (a tuning study's parent run)
_NESTING: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "dlab_mlflow_nesting", default=()
)
BATCH = 100  # MLflow's REST API takes at most 100 params and 1000 metrics per log_batch
ARTIFACTS = ("report.html", "recipe.yaml", "meta.json", "metrics.jsonl")


def wanted(recipe: Recipe) -> bool:
    return "mlflow" in recipe.train.loggers


def tracking_uri(settings: MlflowSettings) -> str | None:
    """train.mlflow.tracking_uri, else $MLFLOW_TRACKING_URI, else None (MLflow's default)."""
    return settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def shown(uri: str | None) -> str:
    """The URI without a password, for messages and meta.json."""
    from dlab.tune import redact

    return redact(uri) if uri else "MLflow's default store"


def check(recipe: Recipe) -> None:
    """Before any work: MLflow is installed, and an HTTP tracking server answers its health check."""
    require("tracking", "train.loggers: mlflow", ("mlflow",), RecipeError)
    uri = tracking_uri(recipe.train.mlflow)
    if uri is None or not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5):
            pass
    except urllib.error.HTTPError:
        pass  # something answered (a proxy, an auth layer): MLflow's own errors say the rest
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DlabError(
            f"train.mlflow.tracking_uri: no MLflow tracking server answers at {shown(uri)} "
            f"({reason}); start it, point MLFLOW_TRACKING_URI elsewhere, or take mlflow out of "
            "train.loggers"
        ) from None


def example_inputs(bundle: DataBundle, count: int = 4) -> tuple[Any, ...] | None:
    """A few real inputs (validation first) as a tuple of NumPy arrays, or None if they are not
    plain tensors."""
    import torch

    loader = bundle.val or bundle.train
    inputs = next(iter(loader.epoch(0)))[0]
    parts = inputs if isinstance(inputs, tuple | list) else (inputs,)
    if not all(isinstance(p, torch.Tensor) for p in parts):
        return None
    return tuple(p[:count].detach().cpu().numpy() for p in parts)


@contextlib.contextmanager
def nested_under(parent_run_id: str | None, **tags: str) -> Iterator[None]:
    """Runs started inside become children of `parent_run_id` (MLflow's nested runs); with
    None, nothing changes."""
    if parent_run_id is None:
        yield
        return
    token = _NESTING.set((("mlflow.parentRunId", parent_run_id), *tags.items()))
    try:
        yield
    finally:
        _NESTING.reset(token)


def parameters(tree: dict[str, Any]) -> dict[str, str]:
    """A recipe as MLflow parameters: its dotted fields, each value as text."""
    return {name: str(value)[:6000] for name, value in flatten(tree).items()}  # MLflow's limit


def git_commit(folder: Path) -> str | None:
    """The commit checked out in `folder`'s repository, if it is one."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def experiment_id(client: Any, name: str) -> str:
    """The experiment's id, created if new (two workers creating it at once both get it)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def for_study(
    base: Recipe, study: Any, storage: str, exclusive: Any
) -> tuple[Recipe, str | None]:
    """A tuning study's base recipe with its experiment named (the study's, not each trial's
    recipe name) and the study's MLflow run id; (base, None) where MLflow is not wanted."""
    if not wanted(base):
        return base, None
    check(base)
    experiment = base.train.mlflow.experiment or base.name
    base = base.override(f"train.mlflow.experiment={experiment}")
    return base, study_run(study, base, storage, exclusive)


def study_run(study: Any, base: Recipe, storage: str, exclusive: Any) -> str:
    """The MLflow run of a tuning study, created by the first of its workers (under the study's
    `exclusive` lock); the others wait for its id, which the study keeps as a user attribute."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(base.train.mlflow))
    deadline = time.monotonic() + 60
    while True:
        known = study.user_attrs.get("mlflow_parent")
        if known:
            return known
        with exclusive(storage, f"dlab-mlflow:{study.study_name}") as mine:
            if mine and not study.user_attrs.get("mlflow_parent"):
                experiment = experiment_id(client, base.train.mlflow.experiment or base.name)
                tags = {"dlab.study": study.study_name, "dlab.storage": shown(storage)}
                created = client.create_run(experiment, run_name=f"study {study.study_name}", tags=tags)
                study.set_user_attr("mlflow_parent", created.info.run_id)
                return created.info.run_id
        if time.monotonic() > deadline:
            raise DlabError(f"tune: no worker created the study's MLflow run in 60 s ({shown(storage)})")
        time.sleep(0.5)


class MlflowRun(Callback):
    """One dlab run's MLflow run: created (or continued) at start, fed every record, finished
    with the run's artifacts and model."""

    def __init__(self, recipe: Recipe, run_dir: RunDir):
        from mlflow import MlflowClient

        self.settings = recipe.train.mlflow
        self.uri = tracking_uri(self.settings)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.run_dir = run_dir
        self._pending: list[Any] = []
        known = run_dir.meta.get("mlflow") or {}
        if known.get("run_id"):  # a resumed run continues its MLflow run
            self.run_id = known["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        experiment = experiment_id(self.client, self.settings.experiment or recipe.name)
        tags = {
            "dlab.model": recipe.model.name,
            "dlab.data": recipe.data.name,
            "dlab.run_dir": str(run_dir.path.resolve()),
            **dict(_NESTING.get()),
        }
        task = (run_dir.meta.get("data") or {}).get("task")
        if task:
            tags["dlab.task"] = str(task)
        commit = git_commit(Path.cwd())
        if commit:
            tags["mlflow.source.git.commit"] = commit
        created = self.client.create_run(experiment, run_name=run_dir.path.name, tags=tags)
        self.run_id = created.info.run_id
        self._log_params(parameters(recipe.to_dict()))
        run_dir.update_meta(
            mlflow={"run_id": self.run_id, "experiment_id": experiment, "tracking_uri": shown(self.uri)}
        )

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(params.items())]
        for start in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + BATCH])

    # --- metrics, as the trainer logs them ---

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        for name, value in logged_numbers(record):
            self._pending.append(Metric(name, value, stamp, int(record["step"])))
        if record["kind"] != "step" or len(self._pending) >= 10 * BATCH:
            self.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        self.flush()

    def flush(self) -> None:
        """Send the metrics not yet sent (a few hundred per request)."""
        while self._pending:
            batch, self._pending = self._pending[: 10 * BATCH], self._pending[10 * BATCH :]
            self.client.log_batch(self.run_id, metrics=batch)

    # --- the end ---

    def finish(self, run: Run, bundle: DataBundle) -> None:
        """Artifacts, the model, and status FINISHED."""
        self.flush()
        for name in ARTIFACTS:
            if (run.path / name).is_file():
                self.client.log_artifact(self.run_id, str(run.path / name))
        if (run.path / "eval").is_dir():
            self.client.log_artifacts(self.run_id, str(run.path / "eval"), "eval")
        if self.settings.log_model:
            model_uri, form = self._log_model(run, example_inputs(bundle))
            self.client.set_tag(self.run_id, "dlab.model_uri", model_uri)
            known = self.run_dir.meta.get("mlflow") or {}
            self.run_dir.update_meta(mlflow={**known, "model_uri": model_uri, "model_format": form})
        self.client.set_terminated(self.run_id, "FINISHED")

    def _log_model(self, run: Run, example: tuple[Any, ...] | None) -> tuple[str, str]:
        """The final model as an MLflow PyTorch model: its URI (for mlflow.pytorch.load_model)
        and format. MLflow's default, pt2 (torch.export: no pickled code to trust when loading),
        traced on a few real inputs with a free batch size; where the model cannot be exported
        (data-dependent control flow), pickled with a warning."""
        import mlflow
        import mlflow.pytorch
        import torch

        import dlab
        from dlab.extras import DISTRIBUTION

        model = run.model.cpu().eval()
        # named, so that MLflow need not load the model in a subprocess to infer them
        requirements = [f"torch=={torch.__version__.split('+')[0]}", f"{DISTRIBUTION}=={dlab.__version__}"]
        previous = mlflow.get_tracking_uri()
        if self.uri is not None:
            mlflow.set_tracking_uri(self.uri)
        try:
            nested = mlflow.active_run() is not None
            with mlflow.start_run(run_id=self.run_id, nested=nested, log_system_metrics=False):
                if example is not None:
                    try:
                        info = mlflow.pytorch.log_model(
                            model,
                            name="model",
                            # as NumPy: MLflow saves the example and infers a TensorSpec
                            # signature from arrays, not from tensors
                            input_example=example[0] if len(example) == 1 else list(example),
                            serialization_format="pt2",
                            pip_requirements=requirements,
                        )
                        return info.model_uri, "pt2"
                    except Exception as exc:  # torch.export's many refusals
                        warnings.warn(
                            f"mlflow: {type(model).__name__} cannot be exported with torch.export "
                            f"({str(exc).splitlines()[0][:200]}); logging it pickled instead",
                            DlabWarning,
                            stacklevel=2,
                        )
                info = mlflow.pytorch.log_model(
                    model, name="model", serialization_format="pickle", pip_requirements=requirements
                )
                return info.model_uri, "pickle"
        finally:
            mlflow.set_tracking_uri(previous)

    def fail(self, error: BaseException) -> None:
        """A run that stopped early: KILLED when interrupted (it can be resumed), else FAILED."""
        with contextlib.suppress(Exception):  # the run's own error is the one to report
            self.flush()
            stopped = isinstance(error, KeyboardInterrupt | TrainingInterrupted)
            self.client.set_terminated(self.run_id, "KILLED" if stopped else "FAILED")
