"""Models: every recipe's `model:` section becomes an nn.Module built for its data's shape."""

from __future__ import annotations

from typing import Any

from torch import nn

from dlab.data.bundle import DataMeta
from dlab.registry import MODELS

__all__ = ["build", "count_parameters"]

# What `dlab list models` builds each model for when counting parameters.
MNIST_META = DataMeta(
    dataset="mnist", input_shape=(1, 28, 28), num_classes=10, classes=[str(d) for d in range(10)]
)


def build(config: Any, meta: DataMeta) -> nn.Module:
    """The model described by a recipe's model section, sized for `meta`."""
    return MODELS.build(config, meta)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
