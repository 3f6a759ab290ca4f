"""The steps of `dlab.train`, each one named: resume or create the run folder, record the start,
fit (the status saying how it ended), save the final weights and record, evaluate, report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dlab import models, runtime, tracking
from dlab.data.bundle import DataBundle
from dlab.errors import RecipeError, RunError, TrainingDiverged, TrainingInterrupted
from dlab.recipe import Recipe
from dlab.runs import RunDir, completed
from dlab.training import distributed
from dlab.training.checkpoint import save_weights
from dlab.training.trainer import History, Trainer

if TYPE_CHECKING:
    from dlab.api import Run


def check_extension(old: Recipe, new: Recipe) -> None:
    """Refuse to lengthen a run whose schedule is laid out over its whole length."""
    schedule = new.train.scheduler.name
    lengthened = (old.train.epochs, old.train.max_steps) != (new.train.epochs, new.train.max_steps)
    if lengthened and schedule not in ("constant", "step"):
        raise RecipeError(
            f"train.epochs: the run's {schedule} schedule is laid out over its original length, so it cannot be "
            f"extended; start a new run (or use a constant or step schedule when you plan to extend)"
        )


def resumable(resume: str | Path, overrides: Sequence[str]) -> tuple[RunDir, Recipe, Path]:
    """The run to continue, its recipe (more epochs or steps at most), and its last checkpoint."""
    run_dir = RunDir.open(resume)
    bad = [o for o in overrides if not o.strip().startswith(("train.epochs=", "train.max_steps="))]
    if bad:
        raise RecipeError(
            "--resume continues the run's own recipe; only train.epochs and train.max_steps "
            f"may change, not {bad[0]!r}"
        )
    recipe = run_dir.recipe.override(*overrides) if overrides else run_dir.recipe
    check_extension(run_dir.recipe, recipe)
    checkpoint = run_dir.checkpoints.latest()
    if checkpoint is None:
        raise RunError(
            f"{run_dir.path}: no checkpoint to resume from (it stopped before its first one)"
        )
    return run_dir, recipe, checkpoint


def hold(held: Any, run_dir: RunDir | None, main: bool) -> None:
    """Rank 0 (or the only process) holds the run folder against other processes until `held`
    (an ExitStack) closes."""
    if run_dir is not None and main:
        held.enter_context(run_dir.lock())


def elastic_resume(
    recipe: Recipe, runs_dir: Any, job: Any
) -> tuple[RunDir | None, Recipe, Path | None]:
    """In a torchrun job with an id: the unfinished run that an earlier attempt of the job
    started, its recipe and its last checkpoint (rank 0 looks, every rank gets its answer);
    (None, recipe, None) to start afresh: one process, no job id, no run of this id, or none
    that reached a checkpoint."""
    if job is None or distributed.elastic_run_id() is None:
        return None, recipe, None
    path = _elastic_run(recipe, runs_dir) if job.main else None
    path = distributed.broadcast_object(path, job)
    if path is None:
        return None, recipe, None
    if job.main:
        print(f"dlab: job {distributed.elastic_run_id()} resumes {path} from its last checkpoint")
    return resumable(path, ())


def _elastic_run(recipe: Recipe, runs_dir: Any) -> str | None:
    """The newest unfinished run of this torchrun job id with a checkpoint."""
    from dlab.runs import runs_root

    job_id, folder = distributed.elastic_run_id(), runs_root(runs_dir) / recipe.name
    if job_id is None or not folder.is_dir():
        return None
    found = []
    for path in folder.iterdir():
        if not (path / RunDir.META).is_file():
            continue
        run = RunDir(path)
        meta = run.meta
        ours = meta.get("elastic_run") == job_id and meta.get("status") != "completed"
        if ours and run.checkpoints.latest() is not None:
            found.append((str(meta.get("created", "")), str(path)))
    return max(found)[1] if found else None


def new_run_dir(recipe: Recipe, bundle: DataBundle, runs_dir: Any, job: Any) -> RunDir:
    """Rank 0 creates the run folder (with the tokenizer); every rank of a job gets its path."""
    run_dir = None
    if job is None or job.main:
        run_dir = RunDir.create(recipe, runs_dir)
        if bundle.tokenizer is not None:
            bundle.tokenizer.save(run_dir.path / RunDir.TOKENIZER)
        for name, write in bundle.files.items():
            write(run_dir.path / name)
    path = distributed.broadcast_object(str(run_dir.path) if run_dir else None, job)
    return run_dir or RunDir.open(path)


def fit_to_report(
    trainer: Trainer,
    run_dir: RunDir,
    bundle: DataBundle,
    recipe: Recipe,
    evaluate_test: bool,
    report: bool,
) -> Run:
    """Fit, save the final weights, evaluate and report: tracked in MLflow where the recipe's
    loggers say so (a run that stops early is marked KILLED or FAILED there)."""
    from dlab.api import Run

    tracker = tracking.MlflowRun(recipe, run_dir) if tracking.wanted(recipe) else None
    if tracker is not None:
        trainer.callbacks.append(tracker)
    try:
        history = fit(trainer, run_dir)
        save_final(trainer, run_dir, history)
        run = evaluated(Run(run_dir), bundle, evaluate_test, report)
    except BaseException as error:
        if tracker is not None:
            tracker.fail(error)
        raise
    if tracker is not None:
        tracker.finish(run, bundle)
    return run


def evaluated(run: Run, bundle: DataBundle, evaluate_test: bool, report: bool) -> Run:
    if evaluate_test:
        evaluate_held_out(run, bundle)
    if report:
        run.write_report()
    return run


def evaluate_held_out(run: Run, bundle: DataBundle) -> None:
    """Evaluate the test split (the validation split without one), on the CPU."""
    if bundle.test is None and bundle.val is None:
        return
    for loader in (bundle.train, bundle.val, bundle.test):
        if loader is not None:
            loader.to(torch.device("cpu"))
    run.evaluate("test" if bundle.test is not None else "val", bundle=bundle)


def record_start(
    run_dir: RunDir,
    trainer: Trainer,
    bundle: DataBundle,
    model: nn.Module,
    seed: int,
    job: Any,
    meta: dict[str, Any] | None,
) -> None:
    """What the run trains, on what, before its first step."""
    runtime.reset_peak_memory(trainer.device)
    run_dir.update_meta(
        status="running",
        data=bundle.meta.to_json(),
        parameters=models.count_parameters(model),
        trainable_parameters=models.count_parameters(model, trainable_only=True),
        forward_flops_per_batch=trainer.forward_flops,
        hardware={**runtime.hardware_summary(trainer.device), **thread_timings(trainer)},
        seed=seed,
        **({"processes": job.world} if job is not None else {}),
        **({"elastic_run": distributed.elastic_run_id()} if job is not None else {}),
        **(meta or {}),
    )


def thread_timings(trainer: Trainer) -> dict[str, Any]:
    """What `threads: auto` measured: milliseconds per forward and backward pass per count."""
    if not trainer.thread_timings:
        return {}
    timings = trainer.thread_timings.items()
    return {"pass_ms_by_threads": {str(n): round(t * 1e3, 3) for n, t in timings}}


def fit(trainer: Trainer, run_dir: RunDir) -> History:
    """trainer.fit(), with the run's status saying how it ended if it did not complete."""
    try:
        return trainer.fit()
    except TrainingInterrupted as exc:
        run_dir.update_meta(status="interrupted")
        raise type(exc)(  # the same kind (a full disk stays DiskFull), with how to go on
            f"{exc}; resume with `dlab train --resume {run_dir.path}`"
        ) from None
    except TrainingDiverged:
        run_dir.update_meta(status="diverged")
        raise
    except BaseException:
        run_dir.update_meta(status="failed")
        raise


def save_final(trainer: Trainer, run_dir: RunDir, history: History) -> None:
    """The final weights (whole, from a sharded model too) and the completed record."""
    # FSDP: every rank sends its slices to rank 0 (the other ranks make the same call)
    save_weights(trainer.strategy.full_weights(trainer.model), run_dir.weights)
    state = trainer.state
    run_dir.update_meta(
        **completed(
            epochs=state.epoch,
            seconds=state.elapsed_s,
            samples=state.samples,
            final=history.last,
            stop_reason=state.stop_reason,
            steps=state.step,
            best_epoch=trainer.early_stopping.best_epoch if trainer.early_stopping else None,
            **({"privacy": trainer.privacy.summary()} if trainer.privacy else {}),
            memory=runtime.peak_memory(trainer.device),
        )
    )
