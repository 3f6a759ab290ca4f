"""Multi-layer perceptron: flatten, then (linear -> [batch-norm] -> activation -> [dropout]) × depth."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from dlab.data.bundle import DataMeta
from dlab.models.layers import activation
from dlab.recipe import ModelConfig
from dlab.registry import MODELS
from dlab.tasks import task_of


class MLPConfig(ModelConfig):
    """Defaults are the seed MLP: 784-128-64-10 with ReLU."""

    hidden: list[int] = Field(
        default_factory=lambda: [128, 64], description="width of each hidden layer"
    )
    activation: Literal["relu", "gelu", "tanh", "sigmoid", "leaky_relu", "silu"] = Field(
        "relu", description="non-linearity after each hidden layer"
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after each hidden activation")
    batch_norm: bool = Field(
        False, description="batch-norm between each hidden linear layer and its activation"
    )


class MLP(nn.Module):
    """z = W x + b, then an activation, layer after layer; the last layer gives class logits."""

    def __init__(self, in_features: int, out_features: int, config: MLPConfig):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in config.hidden:
            layers.append(nn.Linear(width, size, bias=not config.batch_norm))
            if config.batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(activation(config.activation))
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
            width = size
        layers.append(nn.Linear(width, out_features))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # (B, ...) -> (B, classes)


@MODELS.register(
    "mlp",
    config=MLPConfig,
    summary="multi-layer perceptron; defaults: the seed's 784-128-64-10 ReLU",
)
def build_mlp(config: MLPConfig, meta: DataMeta) -> MLP:
    """An MLP over the flattened input."""
    return MLP(math.prod(meta.input_shape), task_of(meta).output_size(meta), config)
