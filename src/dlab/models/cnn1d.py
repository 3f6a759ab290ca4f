"""One-dimensional convolutional networks for any signal: MFCC frames of speech, raw signals,
MNIST-1D, a series of features.

    y[c_out, t] = b[c_out] + Σ_{c_in} Σ_k w[c_out, c_in, k] · x[c_in, t + k - ⌊K/2⌋]

Each block is Conv1d ("same" padding) → batch norm → ReLU → max-pool. The head either averages
over time and classifies the whole signal (`outputs: pooled`), or classifies every remaining frame
(`outputs: every`), which is what a CTC transcription model needs.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from dlab.data.bundle import DataMeta
from dlab.recipe import ModelConfig
from dlab.registry import MODELS
from dlab.tasks import task_of

SPEECH_META = DataMeta(
    dataset="fsdd",
    input_kind="series",
    input_shape=(92, 13),
    num_classes=10,
    classes=[str(d) for d in range(10)],
)


class CNN1dConfig(ModelConfig):
    """Defaults: three blocks of 64, 128, 128 channels, kernel 5, pooling by 2 after each."""

    channels: list[int] = Field(
        default_factory=lambda: [64, 128, 128],
        min_length=1,
        description="output channels of each Conv1d block",
    )
    kernel_size: int = Field(5, ge=1, le=63, description="kernel width (odd keeps frames aligned)")
    pool: int = Field(2, ge=1, le=8, description="max-pool width after each block (1: none)")
    batch_norm: bool = Field(True, description="batch norm after each convolution")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout before the output layer")
    outputs: Literal["pooled", "every"] = Field(
        "pooled",
        description="pooled: one output per signal (global average over time); every: one per "
        "remaining frame (CTC)",
    )


class CNN1d(nn.Module):
    """Conv1d blocks over time, then a pooled or frame-wise head."""

    def __init__(self, meta: DataMeta, config: CNN1dConfig):
        super().__init__()
        task = task_of(meta)
        self.series = meta.input_kind == "series"  # (B, T, F); otherwise (B, D): one channel
        self.every = config.outputs == "every" or task.outputs_every_step
        channels = meta.input_shape[-1] if self.series else 1
        blocks: list[nn.Module] = []
        for width in config.channels:
            blocks += [
                nn.Conv1d(
                    channels,
                    width,
                    config.kernel_size,
                    padding=config.kernel_size // 2,
                    bias=not config.batch_norm,  # batch norm's shift replaces the bias
                ),
                *([nn.BatchNorm1d(width)] if config.batch_norm else []),
                nn.ReLU(),
                *([nn.MaxPool1d(config.pool, ceil_mode=True)] if config.pool > 1 else []),
            ]
            channels = width
        self.features = nn.Sequential(*blocks)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(channels, task.output_size(meta))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        signal = x.transpose(1, 2) if self.series else x.unsqueeze(1)  # (B, C, T)
        features = self.features(signal)
        if self.every:
            return self.head(self.drop(features.transpose(1, 2)))  # (B, T', outputs)
        return self.head(self.drop(features.mean(dim=2)))  # (B, outputs)


@MODELS.register(
    "cnn1d",
    config=CNN1dConfig,
    summary="1-D conv net over time (speech MFCC, MNIST-1D, signals); pooled or per-frame head",
    example_meta=SPEECH_META,
    inputs=("series", "vector"),
)
def build_cnn1d(config: CNN1dConfig, meta: DataMeta) -> CNN1d:
    return CNN1d(meta, config)
