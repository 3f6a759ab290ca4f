"""What `dlab evaluate` reports for each kind of model.

- classification: accuracy, macro and per-class precision/recall/F1, confusion matrix;
- language model: loss, perplexity and token accuracy, plus a generated sample;
- seq2seq: BLEU (sacrebleu, the reference implementation) of beam-search translations;
- regression: MAE and RMSE in the series' own units, against the naive last-value forecast.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from dlab.data import DataBundle
from dlab.errors import DataError
from dlab.registry import LOSSES
from dlab.training.metrics import (
    build_metrics,
    classification_report,
    evaluate,
    predict_all,
    to_device,
)

if TYPE_CHECKING:
    from dlab.api import Run

CPU = torch.device("cpu")


def evaluate_split(run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
    """The task's report for `split`."""
    task = bundle.meta.task
    loader = bundle.loader(split)
    if task == "classification":
        probs, targets = predict_all(run.model, loader, CPU)
        return classification_report(
            probs, targets, bundle.meta.classes or [str(i) for i in range(probs.shape[1])]
        )
    if task == "regression":
        return regression_report(run, bundle, split)
    report = evaluate(
        run.model,
        loader,
        LOSSES.build(run.recipe.train.loss),
        build_metrics(["accuracy", "perplexity"], bundle.meta),
        CPU,
    )
    report["samples"] = loader.num_samples
    if task == "language_model":
        report["sample"] = run.generate(None, max_new_tokens=300, temperature=0.8, seed=0)
    else:
        report.update(translation_report(run, bundle, split))
    return report


def regression_report(run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
    """Errors in the series' units, and the skill over forecasting the last value seen."""
    extra = bundle.meta.extra
    spread = extra["spread"][extra["target_index"]]
    errors = []
    with torch.no_grad():
        for inputs, targets in bundle.loader(split).epoch(0):
            errors.append((run.model(to_device(inputs, CPU)) - targets) * spread)
    error = torch.cat(errors)
    mae = float(error.abs().mean())
    naive = extra["naive_mae"].get(split, math.nan)
    return {
        "samples": len(error),
        "mae": mae,
        "rmse": float(error.pow(2).mean().sqrt()),
        "naive_mae": naive,
        "skill": 1 - mae / naive if naive else math.nan,  # > 0: better than the naive forecast
        "horizon": extra["horizon"],
    }


def translation_report(
    run: Run, bundle: DataBundle, split: str, beam: int = 4, batch: int = 64
) -> dict[str, Any]:
    """Corpus BLEU of beam-search translations against the split's reference sentences."""
    import sacrebleu

    texts = bundle.extra.get("texts", {}).get(split)
    if texts is None:
        raise DataError(f"{bundle.meta.dataset}: no reference texts for '{split}'")
    sources, references = texts
    hypotheses: list[str] = []
    for start in range(0, len(sources), batch):
        hypotheses += run.translate(sources[start : start + batch], beam=beam)
    metric = sacrebleu.BLEU()
    bleu = metric.corpus_score(hypotheses, [references])
    return {
        "bleu": bleu.score,
        "bleu_signature": str(metric.get_signature()),
        "beam": beam,
        "examples": [
            {"source": s, "reference": r, "translation": h}
            for s, r, h in list(zip(sources, references, hypotheses, strict=True))[:5]
        ],
    }
