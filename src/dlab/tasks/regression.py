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
