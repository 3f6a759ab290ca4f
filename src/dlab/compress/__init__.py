"""`dlab compress`: quantize, distill or prune a trained run into a new run, compared with the original.

Every result is an ordinary run directory (evaluate, predict, serve and report work on it) whose
meta.json says what it was compressed from and holds a side-by-side comparison: test accuracy,
size, and CPU latency at batch 1 and 64, measured in one process.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch

from dlab import runtime
from dlab.api import Run, load, train
from dlab.compress import measure
from dlab.compress import quantize as quant
from dlab.compress.distill import DistillationLoss
from dlab.compress.prune import MakePermanent, global_magnitude, nonzero_fraction, structured
from dlab.data import DataBundle
from dlab.data import build as build_data
from dlab.errors import DlabError, RecipeError
from dlab.recipe import load_recipe
from dlab.registry import LOSSES
from dlab.runs import RunDir, now

__all__ = ["distill_run", "prune_run", "quantize_run"]


def _accuracy(model: torch.nn.Module, bundle: DataBundle) -> float:
    from dlab.training.metrics import classification_report, predict_all

    split = "test" if bundle.test is not None else "val"
    probs, targets = predict_all(model, bundle.loader(split), torch.device("cpu"))
    return classification_report(
        probs, targets, bundle.meta.classes or [str(i) for i in range(probs.shape[1])]
    )["accuracy"]


def _row(
    name: str, model: torch.nn.Module, bundle: DataBundle, timing: dict[str, float], size: int
) -> dict[str, Any]:
    return {
        "model": name,
        "accuracy": _accuracy(model, bundle),
        "size_bytes": size,
        "parameters": sum(p.numel() for p in model.parameters()),
        **timing,
    }


def _comparison(
    models: dict[str, torch.nn.Module], bundle: DataBundle, sizes: dict[str, int]
) -> list[dict[str, Any]]:
    timing = measure.latencies(models, bundle)
    return [_row(name, model, bundle, timing[name], sizes[name]) for name, model in models.items()]


def _require_classifier(run: Run, verb: str) -> None:
    from dlab.tasks import task_of

    if not task_of(run.meta).labels_inputs:
        raise DlabError(
            f"compress {verb}: supported for classifiers; {run.path} is a {run.meta.task.replace('_', ' ')} model"
        )


def quantize_run(
    source: str | Path,
    mode: str = "int8",
    runs_dir: str | Path | None = None,
    calibration_batches: int = 16,
) -> Run:
    """An int8 copy of `source` (dynamic for Linear/LSTM/GRU, calibrated static for CNNs)."""
    teacher = load(source)
    _require_classifier(teacher, "--quantize")
    bundle = build_data(teacher.recipe.data, teacher.recipe.seed)
    float_model = teacher.model
    calibration = (
        [x for x, _ in bundle.train.epoch(0)][:calibration_batches]
        if quant.resolve_mode(float_model, mode) == "int8-static"
        else []
    )
    started = time.perf_counter()
    resolved, quantized, prepared = quant.quantize(float_model, mode, calibration)
    seconds = time.perf_counter() - started
    recipe = teacher.recipe.override(f"name={teacher.recipe.name}-{resolved}")
    run_dir = _new_run(teacher, recipe, runs_dir)
    quant.save(resolved, float_model, prepared, run_dir.weights)
    comparison = _comparison(
        {"float32": float_model, resolved: quantized},
        bundle,
        {
            "float32": measure.serialized_bytes(float_model),
            resolved: measure.serialized_bytes(quantized),
        },
    )
    return _finish(
        run_dir,
        bundle,
        {
            "method": "quantize",
            "mode": resolved,
            "quantized_layers": quant.describe(quantized),
            "seconds": round(seconds, 2),
            "calibration_batches": len(calibration),
            "comparison": comparison,
        },
    )


def distill_run(
    source: str | Path,
    student_recipe: str | Path,
    alpha: float = 0.5,
    temperature: float = 4.0,
    baseline: bool = True,
    runs_dir: str | Path | None = None,
    progress: bool = True,
) -> Run:
    """Train the student recipe to imitate `source` (and, for comparison, without the teacher)."""
    if not 0 <= alpha <= 1 or temperature <= 0:
        raise RecipeError("--alpha should be in [0, 1] and --temperature positive")
    teacher = load(source)
    _require_classifier(teacher, "--distill")
    student = load_recipe(student_recipe)
    if student.data.name != teacher.recipe.data.name:
        raise RecipeError(
            f"--distill: the student trains on {student.data.name} but the teacher knows {teacher.recipe.data.name}"
        )
    student = student.model_copy(
        update={"data": teacher.recipe.data}
    )  # same split, normalisation and order
    bundle = build_data(teacher.recipe.data, teacher.recipe.seed)
    loss = DistillationLoss(teacher.model, LOSSES.build(student.train.loss), alpha, temperature)
    origin = {"compressed_from": str(teacher.path)}
    distilled = train(
        student.override(f"name={student.name}-distilled"),
        runs_dir=runs_dir,
        loss=loss,
        progress=progress,
        meta=origin,
        report=False,
    )
    models = {"teacher": teacher.model, "student (distilled)": distilled.model}
    if baseline:
        alone = train(
            student.override(f"name={student.name}-baseline"),
            runs_dir=runs_dir,
            progress=progress,
            report=False,
        )
        models["student (no teacher, same seed)"] = alone.model
    comparison = _comparison(
        models, bundle, {name: measure.serialized_bytes(m) for name, m in models.items()}
    )
    return _finish(
        distilled.dir,
        bundle,
        {
            "method": "distill",
            "alpha": alpha,
            "temperature": temperature,
            "teacher": str(teacher.path),
            "comparison": comparison,
        },
    )


def _fine_tuning(recipe: Any, epochs: int, lr_scale: float) -> list[str]:
    """Overrides that fine-tune a compressed model: a few cosine epochs at a lower rate."""
    return [
        f"train.epochs={epochs}",
        "train.max_steps=null",
        "train.scheduler=cosine",
        "train.warmup_steps=0",
        f"train.optimizer.lr={recipe.train.optimizer.lr * lr_scale}",
        "train.early_stopping=null",
    ]


def prune_run(
    source: str | Path,
    amount: float,
    structured_channels: bool = False,
    finetune_epochs: int = 2,
    runs_dir: str | Path | None = None,
    progress: bool = True,
) -> Run:
    """Prune `amount` of the weights (or channels) of `source`, then fine-tune."""
    if not 0 < amount < 1:
        raise RecipeError(f"--prune: {amount} should be a fraction between 0 and 1")
    teacher = load(source)
    _require_classifier(teacher, "--prune")
    bundle = build_data(teacher.recipe.data, teacher.recipe.seed)
    original = teacher.model
    fine_tune = _fine_tuning(teacher.recipe, finetune_epochs, 0.3 if structured_channels else 0.1)
    model = load(source).model.train()  # a fresh copy to cut
    suffix = f"pruned{round(amount * 100)}"
    callbacks = []
    if structured_channels:
        model, fields = structured(model, teacher.recipe.model, amount)
        fine_tune += [f"model.{k}={v}" for k, v in fields.items()]
        suffix = f"channels{round(amount * 100)}"
    else:
        global_magnitude(model, amount)
        callbacks.append(MakePermanent())
    recipe = teacher.recipe.override(*fine_tune, f"name={teacher.recipe.name}-{suffix}")
    run = train(
        recipe,
        runs_dir=runs_dir,
        model=model,
        callbacks=callbacks,
        progress=progress,
        report=False,
        meta={"compressed_from": str(teacher.path)},
    )
    pruned = run.model
    comparison = _comparison(
        {"original": original, run.recipe.name: pruned},
        bundle,
        {
            "original": measure.compressed_bytes(original),
            run.recipe.name: measure.compressed_bytes(pruned),
        },
    )
    details = {
        "method": "prune",
        "amount": amount,
        "structured": structured_channels,
        "finetune_epochs": finetune_epochs,
        "nonzero_weights": nonzero_fraction(pruned),
        "size": "gzip-compressed state",
        "comparison": comparison,
    }
    return _finish(run.dir, bundle, details)


def _new_run(source: Run, recipe: Any, runs_dir: str | Path | None) -> RunDir:
    run_dir = RunDir.create(recipe, runs_dir)
    tokenizer = source.path / RunDir.TOKENIZER
    if tokenizer.is_file():
        shutil.copyfile(tokenizer, run_dir.path / RunDir.TOKENIZER)
    meta = source.dir.meta
    run_dir.update_meta(
        status="completed",
        data=meta["data"],
        parameters=meta.get("parameters"),
        seed=meta.get("seed"),
        hardware=runtime.hardware_summary(),
        compressed_from=str(source.path),
        finished=now(),
    )
    return run_dir


def _finish(run_dir: RunDir, bundle: DataBundle, details: dict[str, Any]) -> Run:
    run_dir.update_meta(compression=details)
    run = Run(run_dir)
    run.evaluate("test" if bundle.test is not None else "val", bundle=bundle)
    run.write_report()
    return run
