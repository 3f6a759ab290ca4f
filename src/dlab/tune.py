"""`dlab tune`: Optuna searches the recipe's `tune.space`; each trial is an ordinary dlab run.

    tune:
      metric: val_accuracy
      trials: 30
      space:
        train.optimizer.lr: {log_uniform: [1.0e-4, 1.0e-1]}
        model.hidden: {choice: [[64], [128], [256, 128]]}
        model.dropout: {uniform: [0.0, 0.5]}

Storage is SQLite in runs/<recipe>/tune/study.db by default, so a study survives a crash and
continues where it stopped; several processes, or several machines with
`--storage postgresql://user:password@host/db`, can work on one study at once. Each epoch's
validation metric is reported to the pruner, which stops trials that lag behind. At the end the
best parameters are written as runs/<recipe>/tune/best.yaml and trained as a normal run.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dlab._io import atomic_write_text
from dlab.errors import DlabError, RecipeError, TrainingDiverged
from dlab.recipe import Recipe, TuneConfig, load_recipe
from dlab.runs import runs_root
from dlab.training.callbacks import Callback


@dataclass
class TuneResult:
    """What a study found."""

    study_name: str
    storage: str
    best_value: float
    best_params: dict[str, Any]
    best_recipe_path: Path
    trials: list[dict[str, Any]]
    best_run: Any = None


class OptunaReporter(Callback):
    """Reports each epoch's metric to the trial; stops training when the pruner says so."""

    def __init__(self, trial: Any, metric: str):
        self.trial, self.metric, self.pruned = trial, metric, False

    def on_epoch_end(self, trainer, record) -> None:
        if self.metric not in record:
            names = ", ".join(k for k, v in record.items() if isinstance(v, float))
            raise RecipeError(f"tune.metric: '{self.metric}' is not logged; choose one of {names}")
        self.trial.report(float(record[self.metric]), record["epoch"])
        if self.trial.should_prune():
            self.pruned = True
            trainer.state.stop_reason = f"pruned by Optuna after epoch {record['epoch']}"


def storage_url(
    recipe: Recipe, runs_dir: str | Path | None, storage: str | None
) -> tuple[str, Path]:
    """The storage URL (default: SQLite beside the runs) and the study's folder."""
    folder = runs_root(runs_dir) / recipe.name / "tune"
    folder.mkdir(parents=True, exist_ok=True)
    return storage or f"sqlite:///{(folder / 'study.db').resolve()}", folder


def redact(url: str, text: str | None = None) -> str:
    """`url` (or `text` that may quote it) with the password replaced by ***."""
    match = re.match(r"^[\w+.-]+://[^:/@]*:([^@]*)@", url)
    shown = text if text is not None else url
    if match and match.group(1):
        shown = shown.replace(f":{match.group(1)}@", ":***@").replace(match.group(1), "***")
    return shown


def _storage(url: str) -> Any:
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith(
        "sqlite"
    ):  # several processes on one file: wait for the lock instead of failing
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    # a trial whose process died stops beating, is marked failed after the grace period, and is retried once
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
        kwargs["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(
            max_retry=1
        )
    else:
        kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=1)
    return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120, **kwargs)


def _schema_lock(url: str) -> Any:
    """An exclusive lock on `study.db.lock` for a SQLite file; nothing for a server."""
    if not url.startswith("sqlite:///"):
        return contextlib.nullcontext()
    from filelock import FileLock  # a dependency of torch itself

    return FileLock(url.removeprefix("sqlite:///") + ".lock", timeout=120)


def _open_study(
    optuna: Any, name: str, url: str, pruner: Any, direction: str, attempts: int = 6
) -> Any:
    """Create or load the study.

    Workers starting together race to create the schema: on SQLite a file lock beside the database
    lets one create it while the others wait; on a server, a short retry covers the same race.
    """
    for attempt in range(attempts):
        try:
            with _schema_lock(url), warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.create_study(
                    study_name=name,
                    storage=_storage(url),
                    pruner=pruner,
                    direction=direction,
                    load_if_exists=True,
                )
        except (
            Exception
        ) as exc:  # a wrong URL, an unreachable server, a foreign database, or the race
            text = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            racing = any(sign in text for sign in ("IntegrityError", "locked", "already exists"))
            if not racing or attempt == attempts - 1:
                where = redact(url)
                raise DlabError(
                    f"--storage: cannot open the study at {where} ({redact(url, text)})"
                ) from None
            time.sleep(0.3 * (attempt + 1))
    raise AssertionError("unreachable")


def _suggest(trial: Any, path: str, spec: dict[str, list[Any]]) -> Any:
    kind, values = next(iter(spec.items()))
    if kind == "log_uniform":
        return trial.suggest_float(path, values[0], values[1], log=True)
    if kind == "uniform":
        return trial.suggest_float(path, values[0], values[1])
    if kind == "int":
        return trial.suggest_int(path, int(values[0]), int(values[1]))
    # choices may be lists (e.g. layer widths): Optuna stores them by index
    index = trial.suggest_categorical(path, list(range(len(values))))
    return values[index]


def _assignment(path: str, value: Any) -> str:
    return f"{path}={yaml.safe_dump(value, default_flow_style=True).strip()}"


def tune(
    recipe: str | Path | Recipe,
    overrides: tuple[str, ...] | list[str] = (),
    *,
    trials: int | None = None,
    storage: str | None = None,
    runs_dir: str | Path | None = None,
    train_best: bool = True,
    progress: bool = False,
) -> TuneResult:
    """Run (or continue) the study of `recipe`'s tune section."""
    import optuna

    from dlab.api import train

    recipe_obj = load_recipe(recipe, overrides)
    config: TuneConfig | None = recipe_obj.tune
    if config is None:
        raise RecipeError(
            "tune: the recipe has no tune section; add tune: {space: {train.optimizer.lr: {log_uniform: [1e-4, 1e-1]}}}"
        )
    total = trials or config.trials
    url, folder = storage_url(recipe_obj, runs_dir, storage)
    study = _study(optuna, recipe_obj.name, url, config)
    base = recipe_obj.without_tune()

    objective = _objective(optuna, recipe_obj.name, base, config, folder / "trials", progress)
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    finished = len(study.get_trials(deepcopy=False, states=done))
    if finished < total:
        study.optimize(
            objective,
            n_trials=total - finished,
            catch=(TrainingDiverged,),  # a diverged trial is FAIL; any other error stops
            callbacks=[
                optuna.study.MaxTrialsCallback(total, states=done)
            ],  # several workers share the count
        )
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise DlabError(
            f"tune: no trial of {recipe_obj.name} completed (all were pruned or failed)"
        )
    best_trial = study.best_trial
    values = best_trial.user_attrs.get("values", {})
    best_recipe = base.override(*[_assignment(p, v) for p, v in values.items()])
    best_path = folder / "best.yaml"
    atomic_write_text(best_path, best_recipe.to_yaml())
    history = _trials(study)
    best = float(best_trial.value)
    result = TuneResult(recipe_obj.name, redact(url), best, values, best_path, history)
    if train_best:
        run = train(best_recipe, runs_dir=runs_dir, progress=progress, report=False)
        run.dir.update_meta(tuning=_summary(study, config, result))
        run.write_report()
        result.best_run = run
    return result


def _study(optuna: Any, name: str, url: str, config: TuneConfig) -> Any:
    """The study in `url` (created or continued), with its pruner and a fresh sampler seed."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = {
        "median": optuna.pruners.MedianPruner(n_warmup_steps=1),
        "hyperband": optuna.pruners.HyperbandPruner(),
        "none": optuna.pruners.NopPruner(),
    }[config.pruner]
    study = _open_study(optuna, name, url, pruner, config.resolved_direction())
    # A restarted study, or a second worker, must not replay the first one's random draws: the
    # sampler's seed mixes in the trials already stored and this process.
    seed = int(
        np.random.SeedSequence([config.seed, len(study.trials), os.getpid()]).generate_state(1)[0]
    )
    study.sampler = (
        optuna.samplers.TPESampler(seed=seed)
        if config.sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    return study


def _objective(
    optuna: Any, name: str, base: Recipe, config: TuneConfig, trials_dir: Path, progress: bool
) -> Any:
    """One trial: train the base recipe with the sampled values; score its best epoch."""
    from dlab.api import train

    def objective(trial: Any) -> float:
        values = {path: _suggest(trial, path, spec) for path, spec in config.space.items()}
        trial.set_user_attr("values", values)
        trial_recipe = base.override(
            *[_assignment(p, v) for p, v in values.items()],
            f"name={name}-trial{trial.number}",
        )
        reporter = OptunaReporter(trial, config.metric)
        try:
            run = train(
                trial_recipe,
                runs_dir=trials_dir,
                progress=progress,
                callbacks=[reporter],
                evaluate_test=False,
                report=False,
            )
        except TrainingDiverged as exc:  # recorded as a failed trial; the study goes on
            trial.set_user_attr("failure", str(exc).split(";")[0])
            raise
        trial.set_user_attr("run", str(run.path))
        scores = [e[config.metric] for e in run.history.records if config.metric in e]
        if reporter.pruned:
            raise optuna.TrialPruned()
        best = min(scores) if config.resolved_direction() == "minimize" else max(scores)
        if not math.isfinite(best):
            raise optuna.TrialPruned()
        return best

    return objective


def _trials(study: Any) -> list[dict[str, Any]]:
    """Every trial of the study: its number, state, value, sampled values and run."""
    return [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "values": t.user_attrs.get("values", {}),
            "run": t.user_attrs.get("run"),
            **({"failure": t.user_attrs["failure"]} if "failure" in t.user_attrs else {}),
        }
        for t in study.get_trials(deepcopy=False)
    ]


def _summary(study: Any, config: TuneConfig, result: TuneResult) -> dict[str, Any]:
    """What the report shows: every trial's value, and which parameters mattered."""
    import optuna

    importances: dict[str, float] = {}
    try:
        importances = {
            k: float(v) for k, v in optuna.importance.get_param_importances(study).items()
        }
    except Exception:  # too few completed trials to estimate importances
        importances = {}
    return {
        "study": result.study_name,
        "storage": result.storage,  # the password redacted
        "metric": config.metric,
        "direction": config.resolved_direction(),
        "best_value": result.best_value,
        "best_params": result.best_params,
        "importances": importances,
        "trials": [{k: v for k, v in t.items() if k != "run"} for t in result.trials],
    }
