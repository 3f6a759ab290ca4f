"""Regression and forecasting: numbers out, scored in the target's own units.

Evaluation reports MAE and RMSE in the series' units and the skill over the naive forecast that
repeats the last value seen (skill > 0: the model beats it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from dlab.tasks import Task, register
from dlab.training.metrics import to_device

if TYPE_CHECKING:
    from dlab.api import Run
    from dlab.data import DataBundle
    from dlab.data.bundle import Batch, DataMeta
    from dlab.report.context import ReportContext
    from dlab.report.sections import Section


@register
class Regression(Task):
    """Numbers out (forecasts): MAE and RMSE in the target's units, skill over the naive forecast."""

    name = "regression"
    headline = ("mae", "rmse", "naive_mae", "skill")
    fit_metrics = ("mae",)

    def evaluate(self, run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
        extra = bundle.meta.extra
        spread = extra["spread"][extra["target_index"]]
        errors = []
        with torch.no_grad():
            for inputs, targets in bundle.loader(split).epoch(0):
                errors.append(
                    (run.model(to_device(inputs, torch.device("cpu"))) - targets) * spread
                )
        error = torch.cat(errors)
        mae = float(error.abs().mean())
        naive = extra["naive_mae"].get(split, math.nan)
        return {
            "samples": len(error),
            "mae": mae,
            "rmse": float(error.pow(2).mean().sqrt()),
            "naive_mae": naive,
            "skill": 1 - mae / naive if naive else math.nan,
            "horizon": extra["horizon"],
        }

    def output_size(self, meta: DataMeta) -> int:
        return meta.extra.get("horizon", 1)

    def example_batch(self, meta: DataMeta, batch: int, generator: torch.Generator) -> Batch:
        inputs = torch.randn(batch, *meta.input_shape, generator=generator)
        return inputs, torch.randn(batch, self.output_size(meta), generator=generator)

    def report_sections(self) -> list[Section]:
        from dlab.report.sections import Section

        return [Section("forecast", "Forecast vs actual", 40, forecast)]


def forecast(ctx: ReportContext) -> str | None:
    """The model's and the naive forecast against the actual series, in its units."""
    import numpy as np

    from dlab.report import plots
    from dlab.report.html import figure

    if ctx.data_meta.input_kind != "series":
        return None
    extra = ctx.data_meta.extra
    target, spread, shift = (
        extra["target_index"],
        extra["spread"][extra["target_index"]],
        extra["shift"][extra["target_index"]],
    )
    actual, predicted, naive = [], [], []
    with torch.no_grad():
        for x, y in ctx.bundle.loader(ctx.split).epoch(0):
            predicted.append(ctx.model(x)[:, 0])
            actual.append(y[:, 0])
            naive.append(x[:, -1, target])

    def units(parts):
        return torch.cat(parts).numpy() * spread + shift

    report = ctx.evaluation.get(ctx.split, {})
    mae = report.get("mae", float(np.abs(units(predicted) - units(actual)).mean()))
    title = f"{ctx.data_meta.dataset}, {ctx.split} split: model MAE {mae:.3g} vs naive {report.get('naive_mae', float('nan')):.3g}"
    return figure(
        plots.forecast_figure(units(actual), units(predicted), units(naive), title),
        "forecast vs actual",
    )
