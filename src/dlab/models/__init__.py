"""Models: every recipe's `model:` section becomes an nn.Module built for its data's shape."""

from __future__ import annotations

from typing import Any

from torch import nn

from dlab.data.bundle import DataMeta
from dlab.errors import RecipeError
from dlab.registry import MODELS

__all__ = ["build", "count_parameters"]

# What `dlab list models` builds each model for when counting parameters.
MNIST_META = DataMeta(
    dataset="mnist", input_shape=(1, 28, 28), num_classes=10, classes=[str(d) for d in range(10)]
)


def build(config: Any, meta: DataMeta) -> nn.Module:
    """The model described by a recipe's model section, sized for `meta`.

    A model registered with `tasks=` or `inputs=` is checked against the data here, once, with
    one line that names both (a builder need not repeat the guard).
    """
    entry = MODELS.get(config.name)
    tasks, inputs = entry.info.get("tasks"), entry.info.get("inputs")
    if (tasks and meta.task not in tasks) or (inputs and meta.input_kind not in inputs):
        wanted = " or ".join(t.replace("_", " ") for t in tasks or ["any task"])
        kinds = f" of {' or '.join(inputs)}" if inputs else ""
        raise RecipeError(
            f"model.name: {config.name} serves {wanted}{kinds}; {meta.dataset} is "
            f"{meta.task.replace('_', ' ')} data of {meta.input_kind} (see `dlab list models`)"
        )
    return entry.builder(config, meta)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
