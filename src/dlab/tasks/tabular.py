"""Tabular classification: one row of numeric and categorical columns in, one class out.

Evaluation adds to classification's accuracy and F1 the ROC AUC of the positive class (the one
a screening looks for: a malignant tumour, a bad credit risk), and, where the data set defines
what each error costs, the mean cost per case with decisions that minimise the expected cost
(German credit: accept an applicant only when P(good) > 5/6). Permutation importance (how much
the AUC falls when one column is shuffled) says which columns the model relies on; `dlab
predict RUN applicant.csv --explain` attributes one decision to each of its columns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from dlab.tasks import Details, register
from dlab.tasks.classification import Classification
from dlab.training.metrics import classification_report, predict_all

if TYPE_CHECKING:
    from torch import nn

    from dlab.api import Run
    from dlab.data import DataBundle
    from dlab.data.bundle import Batch, DataMeta
    from dlab.report.sections import Section

IMPORTANCE_REPEATS = 3  # shuffles per column (their mean is reported)
ROC_POINTS = 200  # points of the ROC curve kept for the report


class TableColumn(BaseModel):
    """One input column and the training statistics that encode it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["numeric", "categorical"]
    fill: float | str  # what a missing value becomes: the median, or the most frequent level
    transform: Literal["standard", "quantile"] = "standard"  # numeric: how values are scaled
    mean: float = 0.0  # numeric: standardisation (after filling)
    std: float = 1.0
    quantiles: list[float] = Field(default_factory=list)  # numeric: the training distribution
    levels: list[str] = Field(default_factory=list)  # categorical: code k is levels[k - 1]
    counts: list[int] = Field(default_factory=list)  # categorical: training rows per level


class TableDetails(Details):
    """The columns in input order, the target, and what errors cost."""

    columns: list[TableColumn]
    target: str
    positive: int | None = None  # the class ROC AUC scores (binary tasks)
    costs: list[list[float]] | None = None  # costs[true][predicted]
    prior: list[float] = Field(default_factory=list)  # class frequencies in training

    def numeric(self) -> list[int]:
        return [j for j, c in enumerate(self.columns) if c.kind == "numeric"]

    def categorical(self) -> list[int]:
        return [j for j, c in enumerate(self.columns) if c.kind == "categorical"]


def decide(probs: torch.Tensor, costs: list[list[float]] | None) -> torch.Tensor:
    """The class with the least expected cost (the most likely one when errors cost alike)."""
    if costs is None:
        return probs.argmax(-1)
    return (probs @ torch.tensor(costs, dtype=probs.dtype)).argmin(-1)


def scores(probs: torch.Tensor, targets: torch.Tensor, details: TableDetails) -> dict[str, Any]:
    """ROC AUC (of the positive class; macro one-vs-rest for more classes) and the mean cost."""
    from torchmetrics.functional import classification as tmf

    out: dict[str, Any] = {}
    if details.positive is not None:
        score, hit = probs[:, details.positive], (targets == details.positive).long()
        out["roc_auc"] = float(tmf.binary_auroc(score, hit))
        out["average_precision"] = float(tmf.binary_average_precision(score, hit))
        fpr, tpr, _ = tmf.binary_roc(score, hit)
        keep = np.unique(
            np.linspace(0, len(fpr) - 1, min(ROC_POINTS, len(fpr))).round().astype(int)
        )
        out["roc"] = {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}
    else:
        out["roc_auc"] = float(tmf.multiclass_auroc(probs, targets, num_classes=probs.shape[1]))
    if details.costs is not None:
        matrix = torch.tensor(details.costs, dtype=torch.float64)
        out["cost"] = float(matrix[targets, decide(probs.double(), details.costs)].mean())
        out["cost_argmax"] = float(matrix[targets, probs.argmax(-1)].mean())
        # the best single decision for everyone (accept all, refuse all): what a model must beat
        out["cost_constant"] = float(matrix[targets].mean(0).min())
    return out


def permutation_importance(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    details: TableDetails,
    seed: int = 0,
) -> dict[str, float]:
    """For each column, how much the ROC AUC falls when its values are shuffled across rows."""
    generator = torch.Generator().manual_seed(seed)

    def auc(x: torch.Tensor) -> float:
        with torch.no_grad():
            probs = model(x).float().softmax(-1)
        return scores(probs, targets, details.model_copy(update={"costs": None}))["roc_auc"]

    reference = auc(inputs)
    out = {}
    for j, column in enumerate(details.columns):
        drops = []
        for _ in range(IMPORTANCE_REPEATS):
            shuffled = inputs.clone()
            shuffled[:, j] = inputs[torch.randperm(len(inputs), generator=generator), j]
            drops.append(reference - auc(shuffled))
        out[column.name] = float(np.mean(drops))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def attributions(
    model: nn.Module, inputs: torch.Tensor, details: TableDetails, target: int
) -> torch.Tensor:
    """Per row and column: P(target | the row) minus its average over the column's training
    distribution with the other columns kept (a marginal feature ablation; positive: the
    column's actual value raised the probability). Against one typical value instead, the most
    common level could never earn credit."""
    from dlab.data.tables import background

    was_training = model.training
    model.eval()
    out = torch.zeros(inputs.shape)
    with torch.no_grad():
        actual = model(inputs).float().softmax(-1)[:, target]
        for j, column in enumerate(details.columns):
            values, weights = background(column)
            varied = inputs.repeat_interleave(len(values), 0)
            varied[:, j] = values.repeat(len(inputs))
            probs = model(varied).float().softmax(-1)[:, target].view(len(inputs), -1)
            out[:, j] = actual - probs @ weights
    model.train(was_training)
    return out


@register
class Tabular(Classification):
    """Rows of numeric and categorical columns: accuracy, ROC AUC, cost, and which columns decide."""

    name = "tabular"
    Details = TableDetails
    headline = ("accuracy", "roc_auc", "cost", "macro_f1")
    padded_inputs = False
    hf_auto_class = None

    def evaluate(self, run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
        details = bundle.meta.details
        probs, targets = predict_all(run.model, bundle.loader(split), torch.device("cpu"))
        report = classification_report(probs, targets, bundle.meta.classes)
        report.update(scores(probs, targets, details))
        if details.costs is not None:  # accuracy of the decisions the costs call for
            decided = decide(probs.double(), details.costs)
            report["decision_accuracy"] = float((decided == targets).float().mean())
        inputs = torch.cat([x for x, _ in bundle.loader(split).epoch(0)])
        run.model.eval()
        report["importance"] = permutation_importance(run.model, inputs, targets, details)
        return report

    def example_batch(self, meta: DataMeta, batch: int, generator: torch.Generator) -> Batch:
        columns = meta.details.columns
        inputs = torch.randn(batch, len(columns), generator=generator)
        for j, column in enumerate(columns):
            if column.kind == "categorical":
                high = len(column.levels) + 1
                inputs[:, j] = torch.randint(0, high, (batch,), generator=generator).float()
        return inputs, torch.randint(0, meta.num_classes, (batch,), generator=generator)

    def answer(self, outputs: torch.Tensor, meta: DataMeta, top_k: int = 5) -> list[dict[str, Any]]:
        """The class (the cheapest decision where errors have costs) and every probability."""
        answers = super().answer(outputs, meta, top_k)
        costs = meta.details.costs
        if costs is None:
            return answers
        probs = outputs.float().softmax(-1).double()
        expected = probs @ torch.tensor(costs, dtype=torch.float64)
        for answer, decision, cost in zip(answers, decide(probs, costs), expected, strict=True):
            answer["label"] = meta.classes[int(decision)]
            answer["expected_cost"] = round(float(cost[decision]), 4)
        return answers

    def report_sections(self) -> list[Section]:
        from dlab.tasks import classification_report as shared
        from dlab.tasks import tabular_report

        return [shared.sections()[0], *tabular_report.sections()]
