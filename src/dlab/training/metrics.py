"""Metrics by name (torchmetrics underneath) and the evaluation loop shared by train and evaluate.

torchmetrics is imported on first use: it pulls in scipy and costs ~3 s of start-up, which
commands that only validate a recipe or predict one image should not pay.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dlab.data.bundle import DataMeta, Loader
from dlab.errors import RecipeError, did_you_mean

if TYPE_CHECKING:
    import torchmetrics

# metric name -> (torchmetrics class path, keyword arguments given the data's metadata)
METRICS: dict[str, dict[str, tuple[str, Any]]] = {
    "classification": {
        "accuracy": (
            "classification.MulticlassAccuracy",
            lambda m: {"num_classes": m.num_classes, "average": "micro"},
        ),
        "balanced_accuracy": (
            "classification.MulticlassAccuracy",
            lambda m: {"num_classes": m.num_classes, "average": "macro"},
        ),
        "top5_accuracy": (
            "classification.MulticlassAccuracy",
            # torchmetrics averages per class unless told: top-5 accuracy is over samples
            lambda m: {
                "num_classes": m.num_classes,
                "top_k": min(5, m.num_classes),
                "average": "micro",
            },
        ),
        "f1": (
            "classification.MulticlassF1Score",
            lambda m: {"num_classes": m.num_classes, "average": "macro"},
        ),
        "precision": (
            "classification.MulticlassPrecision",
            lambda m: {"num_classes": m.num_classes, "average": "macro"},
        ),
        "recall": (
            "classification.MulticlassRecall",
            lambda m: {"num_classes": m.num_classes, "average": "macro"},
        ),
    },
    "language_model": {
        "accuracy": ("!TokenAccuracy", lambda m: {}),
        "perplexity": ("text.Perplexity", lambda m: {"ignore_index": IGNORE}),
    },
    "seq2seq": {
        "accuracy": ("!TokenAccuracy", lambda m: {}),
        "perplexity": ("text.Perplexity", lambda m: {"ignore_index": IGNORE}),
    },
    "regression": {
        "mae": ("MeanAbsoluteError", lambda m: {}),
        "mse": ("MeanSquaredError", lambda m: {}),
        "rmse": ("MeanSquaredError", lambda m: {"squared": False}),
    },
    "rating": {
        "mae": ("MeanAbsoluteError", lambda m: {}),
        "mse": ("MeanSquaredError", lambda m: {}),
        "rmse": ("MeanSquaredError", lambda m: {"squared": False}),
    },
    # outputs (B, C) score C candidates per user, targets (B, C) mark the held-out one
    "ranking": {
        "hit_rate": ("!retrieval.RetrievalHitRate", lambda m: {"top_k": 10}),
        "ndcg": ("!retrieval.RetrievalNormalizedDCG", lambda m: {"top_k": 10}),
    },
}


# tables: classification's metrics and ROC AUC (for two classes, macro one-vs-rest AUC is the
# binary AUC: both classes' curves have the same area)
METRICS["tabular"] = {
    **METRICS["classification"],
    "roc_auc": (
        "classification.MulticlassAUROC",
        lambda m: {"num_classes": m.num_classes, "average": "macro"},
    ),
}

IGNORE = -100  # target id that scores nothing (padding)


def metric_class(path: str) -> type:
    import importlib

    if path == "!TokenAccuracy":  # one of ours, below
        return _token_accuracy_class()
    if path.startswith("!"):  # a retrieval metric over rows of candidates
        return _per_row_class(metric_class(path[1:]))
    module, _, name = ("torchmetrics." + path).rpartition(".")
    return getattr(importlib.import_module(module), name)


# the classes below are built once: metrics of one kind must share a class to merge their states
@cache
def _token_accuracy_class() -> type:
    import torchmetrics

    class TokenAccuracy(torchmetrics.Metric):
        """Share of (non-padding) target tokens whose most likely prediction is right."""

        full_state_update = False

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.add_state(
                "correct", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum"
            )
            self.add_state("total", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

        def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:  # (B, T, V), (B, T)
            scored = targets != IGNORE
            self.correct += ((logits.argmax(-1) == targets) & scored).sum()
            self.total += scored.sum()

        def compute(self) -> torch.Tensor:
            return self.correct.float() / self.total.clamp_min(1)

    return TokenAccuracy


@cache
def _per_row_class(retrieval: type) -> type:
    """`retrieval` (a torchmetrics retrieval metric) over (B, C) scores of C candidates per query:
    each row is one query (torchmetrics wants flat scores with a query index)."""

    class PerRow(retrieval):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.add_state("rows", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

        def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:  # type: ignore[override]
            index = torch.arange(len(scores), device=scores.device) + self.rows
            self.rows += len(scores)
            super().update(
                scores.reshape(-1).float(),
                targets.reshape(-1) > 0,
                indexes=index[:, None].expand_as(scores).reshape(-1),
            )

    PerRow.__name__ = retrieval.__name__
    return PerRow


def build_metrics(names: list[str], meta: DataMeta) -> torchmetrics.MetricCollection:
    """The named metrics for `meta.task`, or a RecipeError naming the closest valid one."""
    available = METRICS.get(meta.task, {})
    for name in names:
        if name not in available and not available:
            raise RecipeError(
                f"train.metrics: {meta.task.replace('_', ' ')} has no metrics besides the loss "
                "during training (its evaluation reports the rest); set metrics: []"
            )
        if name not in available:
            raise RecipeError(
                f"train.metrics: unknown metric '{name}' for {meta.task}{did_you_mean(name, available)}; "
                f"choose from {', '.join(available)}"
            )
    import torchmetrics

    # every process of a distributed job evaluates the whole split, so metrics never sync across
    # processes (rank 0 also evaluates alone after the others have finished)
    return torchmetrics.MetricCollection(
        {
            name: metric_class(available[name][0])(
                **available[name][1](meta), sync_on_compute=False
            )
            for name in names
        }
    )


def forward(model: nn.Module, inputs: Any) -> torch.Tensor:
    """Call a model on one input tensor or a tuple of them."""
    return model(*inputs) if isinstance(inputs, tuple) else model(inputs)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a tensor, or a tuple of tensors, to `device` (no-op when already there)."""
    if isinstance(batch, tuple):
        return tuple(to_device(b, device) for b in batch)
    return batch.to(device, non_blocking=True) if isinstance(batch, torch.Tensor) else batch


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Loader,
    loss_fn: nn.Module,
    metrics: torchmetrics.MetricCollection,
    device: torch.device,
    prefix: str = "",
) -> dict[str, float]:
    """Mean loss and every metric of `model` over `loader`."""
    was_training = model.training
    model.eval()
    metrics = metrics.to(device)
    metrics.reset()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for inputs, targets in loader.epoch(0):
        inputs, targets = to_device(inputs, device), to_device(targets, device)
        outputs = forward(model, inputs)
        total += loss_fn(outputs, targets).double() * len(targets)
        count += len(targets)
        metrics.update(outputs, targets)
    model.train(was_training)
    results = {"loss": (total / max(count, 1)).item()}
    results.update({name: float(value) for name, value in metrics.compute().items()})
    return {f"{prefix}{k}": v for k, v in results.items()}


@torch.no_grad()
def predict_all(
    model: nn.Module, loader: Loader, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities and targets for a whole split (on the CPU)."""
    was_training = model.training
    model.eval()
    probs, targets = [], []
    for inputs, target in loader.epoch(0):
        outputs = forward(model, to_device(inputs, device))
        probs.append(outputs.float().softmax(-1).cpu())
        targets.append(target.cpu())
    model.train(was_training)
    return torch.cat(probs), torch.cat(targets)


def classification_report(
    probs: torch.Tensor, targets: torch.Tensor, classes: list[str]
) -> dict[str, Any]:
    """Accuracy, macro and per-class precision/recall/F1, and the confusion matrix."""
    from torchmetrics.functional import classification as tmf

    n = len(classes)
    kwargs = {"num_classes": n}
    per_class = {
        "precision": tmf.multiclass_precision(probs, targets, average=None, **kwargs),
        "recall": tmf.multiclass_recall(probs, targets, average=None, **kwargs),
        "f1": tmf.multiclass_f1_score(probs, targets, average=None, **kwargs),
    }
    support = torch.bincount(targets, minlength=n)
    confusion = tmf.multiclass_confusion_matrix(probs, targets, **kwargs)
    return {
        "samples": len(targets),
        "accuracy": float(tmf.multiclass_accuracy(probs, targets, average="micro", **kwargs)),
        "macro_precision": float(per_class["precision"].mean()),
        "macro_recall": float(per_class["recall"].mean()),
        "macro_f1": float(per_class["f1"].mean()),
        "per_class": [
            {
                "class": name,
                "precision": float(per_class["precision"][i]),
                "recall": float(per_class["recall"][i]),
                "f1": float(per_class["f1"][i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        ],
        "confusion_matrix": confusion.tolist(),
    }
