"""The tabular task's report sections: the ROC curve and the cost of the decisions beside the
best single decision for everyone, which columns the model relies on (permutation importance),
and why it decided as it did for a few cases of the split (per-column attributions).

Imported only when a report is built (it pulls in matplotlib).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from dlab.report.context import ReportContext
    from dlab.report.sections import Section

CASES = 3  # cases explained column by column
COLUMNS_SHOWN = 8  # the columns with the largest attributions per case


def sections() -> list[Section]:
    from dlab.report.sections import Section

    return [
        Section("tabular_results", "ROC curve, costs and the columns that matter", 22, results),
        Section("tabular_cases", "Why the model decided (per-column attributions)", 32, cases),
    ]


def results(ctx: ReportContext) -> str | None:
    from dlab.report.html import escape, figure, note, table
    from dlab.report.plots import subplots

    report = ctx.evaluation.get(ctx.split, {})
    if "roc_auc" not in report:
        return note(f"no evaluation yet: run `dlab evaluate {ctx.path} --split {ctx.split}`")
    parts = [f"<p>{escape(ctx.split)} split: ROC AUC {report['roc_auc']:.4f}"]
    if "average_precision" in report:
        parts.append(f", average precision {report['average_precision']:.4f}")
    parts.append("</p>")
    if "cost" in report:
        parts.append(
            table(
                [
                    ["decisions that minimise the expected cost", report["cost"]],
                    ["the most likely class", report["cost_argmax"]],
                    ["the best single decision for everyone", report["cost_constant"]],
                ],
                ["decision rule", "mean cost per case"],
            )
        )
    importance = report.get("importance", {})
    panels = ("roc" in report) + bool(importance)
    if not panels:
        return "".join(parts)
    fig, axes = subplots(1, panels, figsize=(5 * panels + 1, 3.6), squeeze=False)
    axes = list(axes[0])
    if "roc" in report:
        ax = axes.pop(0)
        positive = ctx.data_meta.classes[ctx.data_meta.details.positive]
        ax.plot(report["roc"]["fpr"], report["roc"]["tpr"], color="#4c72b0")
        ax.plot([0, 1], [0, 1], color="#999", linestyle=":")
        ax.set(xlabel="false positive rate", ylabel="true positive rate",
               title=f"ROC of '{positive}' (AUC {report['roc_auc']:.3f})")  # fmt: skip
    if importance:
        ax = axes.pop(0)
        names = list(importance)[:12][::-1]
        ax.barh(names, [importance[n] for n in names], color="#5c7cfa")
        ax.set(xlabel="ROC AUC lost when the column is shuffled", title="permutation importance")
    fig.tight_layout()
    parts.append(figure(fig, "ROC curve and permutation importance"))
    return "".join(parts)


def cases(ctx: ReportContext) -> str | None:
    """The most confident correct case, the most confident mistake, and the least sure case."""
    from dlab.data.tables import decode_value
    from dlab.report.html import escape, note, table
    from dlab.tasks.tabular import attributions

    meta = ctx.data_meta
    details = meta.details
    loader = ctx.bundle.loader(ctx.split)
    inputs = torch.cat([x for x, _ in loader.epoch(0)])
    targets = torch.cat([y for _, y in loader.epoch(0)])
    model = ctx.model.eval()
    with torch.no_grad():
        probs = model(inputs).float().softmax(-1)
    confidence, predicted = probs.max(-1)
    right = predicted == targets
    picks = {}
    if right.any():
        picks["the most confident correct case"] = int(torch.where(right, confidence, -1).argmax())
    if (~right).any():
        picks["the most confident mistake"] = int(torch.where(~right, confidence, -1).argmax())
    picks["the least sure case"] = int(confidence.argmin())
    if not picks:
        return note("no cases to explain")
    target = details.positive if details.positive is not None else None
    parts = []
    for title, i in list(picks.items())[:CASES]:
        cls = target if target is not None else int(predicted[i])
        scores = attributions(model, inputs[i : i + 1], details, cls)[0].numpy()
        order = np.argsort(-np.abs(scores))[:COLUMNS_SHOWN]
        rows = [[details.columns[j].name, decode_value(details.columns[j], float(inputs[i, j])),
                 f"{scores[j]:+.3f}"] for j in order]  # fmt: skip
        parts.append(
            f"<h3>{escape(title)}</h3><p>true: {escape(meta.classes[int(targets[i])])}, "
            f"P({escape(meta.classes[cls])}) = {float(probs[i, cls]):.3f}</p>"
            + table(rows, ["column", "value", f"moves P({meta.classes[cls]}) by"])
        )
    return (
        "<p>How much each column's actual value moved the probability, against the same case "
        "with that column drawn from its training distribution (the others kept).</p>"
        + "".join(parts)
    )
