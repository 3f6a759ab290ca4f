"""Regression and forecasting: numbers out, scored in the target's own units.

Evaluation reports MAE and RMSE in the series' units and the skill over the naive forecast that
repeats the last value seen (skill > 0: the model beats it).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field

from dlab.tasks import Details, Task, register
from dlab.training.metrics import to_device

if TYPE_CHECKING:
    from dlab.api import Run
    from dlab.data import DataBundle
    from dlab.data.bundle import Batch, DataMeta
    from dlab.report.context import ReportContext
    from dlab.report.sections import Section


class RegressionDetails(Details):
    """A forecast's horizon and the scaling that turns model units back into the series'."""

    horizon: int = 1  # steps predicted at once
    columns: list[str] = Field(
        default_factory=list
    )  # the series' columns, the target first among equals
    target_index: int = 0  # which column is forecast
    scale: str | None = None  # how the columns were scaled (recipe data.scale)
    shift: list[float] = Field(default_factory=list)  # per column: value = scaled * spread + shift
    spread: list[float] = Field(default_factory=list)
    naive_mae: dict[str, float] = Field(
        default_factory=dict
    )  # per split: MAE of repeating the last value
    steps: dict[str, int] = Field(default_factory=dict)  # time steps per split

    def unscale(self) -> tuple[float, float]:
        """(spread, shift) of the target column (1, 0 when the data was not scaled)."""
        if not self.spread:
            return 1.0, 0.0
        return self.spread[self.target_index], self.shift[self.target_index]


@register
class Regression(Task):
    """Numbers out (forecasts): MAE and RMSE in the target's units, skill over the naive forecast."""

    name = "regression"
    Details = RegressionDetails
    headline = ("mae", "rmse", "naive_mae", "skill")
    fit_metrics = ("mae",)

    def evaluate(self, run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
        details = bundle.meta.details
        spread = details.unscale()[0]
        errors = []
        with torch.no_grad():
            for inputs, targets in bundle.loader(split).epoch(0):
                errors.append(
                    (run.model(to_device(inputs, torch.device("cpu"))) - targets) * spread
                )
        error = torch.cat(errors)
        mae = float(error.abs().mean())
        naive = details.naive_mae.get(split, math.nan)
        return {
            "samples": len(error),
            "mae": mae,
            "rmse": float(error.pow(2).mean().sqrt()),
            "naive_mae": naive,
            "skill": 1 - mae / naive if naive else math.nan,
            "horizon": details.horizon,
        }

    def output_size(self, meta: DataMeta) -> int:
        return meta.details.horizon

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
    details = ctx.data_meta.details
    target, (spread, shift) = details.target_index, details.unscale()
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
