"""Classification: one label per input (images, vectors, texts, series).

Evaluation reports accuracy, macro and per-class precision/recall/F1 and the confusion matrix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from dlab.tasks import Task, register
from dlab.training.metrics import classification_report, predict_all

if TYPE_CHECKING:
    from dlab.api import Run
    from dlab.data import DataBundle
    from dlab.report.sections import Section


@register
class Classification(Task):
    """One label per input: accuracy, per-class F1 and a confusion matrix."""

    name = "classification"
    headline = ("accuracy", "macro_f1", "loss")
    fit_metrics = ("accuracy",)
    scores_accuracy = True
    verbs = ("predict",)
    labels_inputs = True

    def evaluate(self, run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
        probs, targets = predict_all(run.model, bundle.loader(split), torch.device("cpu"))
        classes = bundle.meta.classes or [str(i) for i in range(probs.shape[1])]
        return classification_report(probs, targets, classes)

    def report_sections(self) -> list[Section]:
        from dlab.tasks import classification_report

        return classification_report.sections()
