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

from dlab import tracking
from dlab._io import atomic_write_text
from dlab.errors import DlabError, RecipeError, TrainingDiverged
from dlab.extras import require
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
    trained_elsewhere: str | None = None  # another worker's best run (or "in progress")


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


def _driver_url(url: str) -> str:
    """SQLAlchemy's plain `postgresql://` means psycopg2; without it, use psycopg 3 (the tune
    extra's driver) for the same URL."""
    import importlib.util

    if (
        url.startswith("postgresql://")
        and importlib.util.find_spec("psycopg2") is None
        and importlib.util.find_spec("psycopg") is not None
    ):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _storage(url: str, heartbeat: int = 10, grace: int = 60) -> Any:
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
    return optuna.storages.RDBStorage(
        _driver_url(url), heartbeat_interval=heartbeat, grace_period=grace, **kwargs
    )


def _schema_lock(url: str) -> Any:
    """An exclusive lock on `study.db.lock` for a SQLite file; nothing for a server."""
    if not url.startswith("sqlite:///"):
        return contextlib.nullcontext()
    from filelock import FileLock  # a dependency of torch itself

    return FileLock(url.removeprefix("sqlite:///") + ".lock", timeout=120)


def _open_study(
    optuna: Any,
    name: str,
    url: str,
    pruner: Any,
    direction: str,
    attempts: int = 6,
    heartbeat: tuple[int, int] = (10, 60),
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
                    storage=_storage(url, *heartbeat),
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


def _tune_section(recipe: Recipe) -> TuneConfig:
    if recipe.tune is None:
        raise RecipeError(
            "tune: the recipe has no tune section; add tune: {space: {train.optimizer.lr: {log_uniform: [1e-4, 1e-1]}}}"
        )
    return recipe.tune


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
    require("tune", "tune")
    import optuna

    from dlab.api import train

    recipe_obj = load_recipe(recipe, overrides)
    config = _tune_section(recipe_obj)
    total = trials or config.trials
    url, folder = storage_url(recipe_obj, runs_dir, storage)
    study = _study(optuna, recipe_obj.name, url, config)
    base = recipe_obj.without_tune()
    # MLflow (if the recipe logs there): one run per study, every trial's run nested under it
    base, parent = tracking.for_study(base, study, url, _exclusive)

    objective = _objective(
        optuna, recipe_obj.name, base, config, folder / "trials", progress, total, parent
    )
    _run_to_target(optuna, study, objective, total, config)
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        raise DlabError(
            f"tune: no trial of {recipe_obj.name} completed (all were pruned or failed)"
        )
    best_trial = study.best_trial
    values = best_trial.user_attrs.get("values", {})
    best_path = folder / "best.yaml"
    result = TuneResult(
        recipe_obj.name, redact(url), float(best_trial.value), values, best_path, _trials(study)
    )
    # Every worker ends here; one writes the best recipe and trains it, the others leave it be.
    with _exclusive(url, f"dlab-best:{recipe_obj.name}") as mine:
        claimed = study.user_attrs.get("best", {})
        if not mine or (
            claimed.get("trial") == best_trial.number and (claimed.get("run") or not train_best)
        ):
            result.trained_elsewhere = claimed.get("run") if mine else "in progress"
            return result
        best_recipe = base.override(*[_assignment(p, v) for p, v in values.items()])
        atomic_write_text(best_path, best_recipe.to_yaml())
        claim = {"trial": best_trial.number, "recipe": str(best_path), "run": None}
        if train_best:
            with tracking.nested_under(parent, **{"dlab.best_of_study": recipe_obj.name}):
                run = train(best_recipe, runs_dir=runs_dir, progress=progress, report=False)
            run.dir.update_meta(tuning=_summary(study, config, result))
            run.write_report()
            result.best_run, claim["run"] = run, str(run.path)
        study.set_user_attr("best", claim)
    return result


class _Surplus(Exception):
    """A trial created after the study already had its count of trials (workers racing)."""


_WAITING_NOTE_EVERY = 30.0  # seconds between "waiting for trial N" lines


def _done(optuna: Any, trial: Any) -> bool:
    """A trial that counts toward the total: complete, pruned, or failed by divergence (a
    finished attempt). Trials failed because their worker died are retried and do not count,
    nor do surplus ones."""
    state = optuna.trial.TrialState
    return trial.state in (state.COMPLETE, state.PRUNED) or (
        trial.state == state.FAIL and "failure" in trial.user_attrs
    )


def _counts(optuna: Any, study: Any) -> tuple[int, int, int]:
    """(trials done, trials running or waiting, of those waiting) in the study."""
    state = optuna.trial.TrialState
    done = pending = waiting = 0
    for t in study.get_trials(deepcopy=False):
        if _done(optuna, t):
            done += 1
        elif t.state in (state.RUNNING, state.WAITING):
            pending += 1
            waiting += t.state == state.WAITING
    return done, pending, waiting


def _run_to_target(optuna: Any, study: Any, objective: Any, total: int, config: TuneConfig) -> None:
    """Run trials until the study (all its workers together) has `total` of them done.

    A worker starts a trial only while done + in flight is short of the total; when the last
    ones run elsewhere it waits for them, because a worker that dies leaves its trial to be
    failed after `tune.grace` seconds and retried, and someone must run the retry.
    """
    last_note = 0.0
    while True:
        with warnings.catch_warnings():  # experimental since optuna 2.9, and still there in 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial: failed, re-queued
        done, pending, waiting = _counts(optuna, study)
        if done >= total:
            return
        if done + pending >= total and not waiting:
            if time.monotonic() - last_note > _WAITING_NOTE_EVERY:
                print(
                    f"tune: {done}/{total} trials done; waiting for {pending} running elsewhere "
                    f"(one whose worker stops beating is retried after {config.grace} s)",
                    flush=True,
                )
                last_note = time.monotonic()
            time.sleep(min(1.0, config.heartbeat))
            continue
        study.optimize(objective, n_trials=1, catch=(TrainingDiverged, _Surplus))


@contextlib.contextmanager
def _exclusive(url: str, key: str) -> Any:
    """A lock shared by every worker of a study, held for the block; yields False at once if
    another worker holds it. SQLite: a file lock beside the database; PostgreSQL and MySQL: the
    server's advisory lock, released by the server if the worker dies."""
    if url.startswith("sqlite:///"):
        from filelock import FileLock, Timeout

        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", key.split(":", 1)[0].removeprefix("dlab-"))
        lock = FileLock(url.removeprefix("sqlite:///") + f".{slug}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()
        return
    if not url.startswith(("postgresql", "mysql")):
        yield True  # no lock to share: every worker writes the best recipe
        return
    import hashlib

    import sqlalchemy

    engine = sqlalchemy.create_engine(_driver_url(url), poolclass=sqlalchemy.pool.NullPool)
    number = int.from_bytes(
        hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True
    )
    postgres = url.startswith("postgresql")
    take, give = (
        ("SELECT pg_try_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)")
        if postgres
        else ("SELECT GET_LOCK(:k, 0)", "SELECT RELEASE_LOCK(:k)")
    )
    argument = {"k": number if postgres else key[:64]}
    with engine.connect() as connection:
        got = bool(connection.execute(sqlalchemy.text(take), argument).scalar())
        try:
            yield got
        finally:
            if got:
                connection.execute(sqlalchemy.text(give), argument)
    engine.dispose()


def _study(optuna: Any, name: str, url: str, config: TuneConfig) -> Any:
    """The study in `url` (created or continued), with its pruner and a fresh sampler seed."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = {
        "median": optuna.pruners.MedianPruner(n_warmup_steps=1),
        "hyperband": optuna.pruners.HyperbandPruner(),
        "none": optuna.pruners.NopPruner(),
    }[config.pruner]
    study = _open_study(
        optuna,
        name,
        url,
        pruner,
        config.resolved_direction(),
        heartbeat=(config.heartbeat, config.grace),
    )
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
    optuna: Any,
    name: str,
    base: Recipe,
    config: TuneConfig,
    trials_dir: Path,
    progress: bool,
    total: int,
    parent: str | None = None,
) -> Any:
    """One trial: train the base recipe with the sampled values; score its best epoch."""
    import socket

    from dlab.api import train

    in_flight = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)

    def objective(trial: Any) -> float:
        # Trial numbers order the workers' trials: one with `total` counted trials before it is
        # surplus (two workers started the last one together) and stops at once.
        before = [
            t
            for t in trial.study.get_trials(deepcopy=False)
            if t.number < trial.number and (t.state in in_flight or _done(optuna, t))
        ]
        if len(before) >= total:
            trial.set_user_attr("surplus", True)
            raise _Surplus
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        values = {path: _suggest(trial, path, spec) for path, spec in config.space.items()}
        trial.set_user_attr("values", values)
        trial_recipe = base.override(
            *[_assignment(p, v) for p, v in values.items()],
            f"name={name}-trial{trial.number}",
        )
        reporter = OptunaReporter(trial, config.metric)
        try:
            with tracking.nested_under(parent, **{"dlab.trial": str(trial.number)}):
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
        if not t.user_attrs.get("surplus")
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
