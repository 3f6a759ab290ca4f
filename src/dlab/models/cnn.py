"""Plain convolutional networks: (conv -> activation) blocks, max-pooling, then fully connected layers.

The seed tutorial hard-codes the flatten size 9216 (= 64·12·12), which is only right when both
convolutions come before one pooling; here the size is computed from the input shape, so no
variant (padding, pooling after each block, another image size) can get it wrong.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from dlab.data.bundle import DataMeta
from dlab.models.layers import activation
from dlab.recipe import ModelConfig
from dlab.registry import MODELS
from dlab.tasks import task_of


class CNNConfig(ModelConfig):
    """Defaults are the seed CNN: conv 1→32 3×3, conv 32→64 3×3, max-pool 2, fc 128, fc 10."""

    channels: list[int] = Field(
        default_factory=lambda: [32, 64],
        min_length=1,
        description="output channels of each conv layer",
    )
    kernel_size: int = Field(3, ge=1, description="square kernel size of every conv layer")
    padding: int = Field(
        0, ge=0, description="zero padding of every conv layer (1 keeps 3×3 convs 'same')"
    )
    pool: Literal["last", "each"] = Field(
        "last",
        description="max-pool 2×2 once after the last conv (seed 000) or after each conv (seed 001)",
    )
    hidden: int | list[int] = Field(
        128,
        description="width of the fully connected hidden layer, or a list of widths, one layer "
        "each (e.g. [120, 84], LeNet's head); 0 or []: none, as keras.io's MNIST CNN",
    )
    activation: Literal["relu", "gelu", "tanh", "sigmoid", "leaky_relu", "silu"] = Field(
        "relu", description="non-linearity"
    )
    batch_norm: bool = Field(False, description="batch-norm after each convolution")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout after pooling and after each hidden layer"
    )

    @field_validator("hidden")
    @classmethod
    def _widths(cls, value: int | list[int]) -> int | list[int]:
        widths = [value] if isinstance(value, int) else value
        if any(w < 0 for w in widths) or (isinstance(value, list) and 0 in widths):
            raise ValueError(f"hidden widths must be positive (0 alone means none), got {value}")
        return value

    @property
    def hidden_widths(self) -> list[int]:
        """The hidden layers' widths, in order ([] for none)."""
        if isinstance(self.hidden, int):
            return [self.hidden] if self.hidden else []
        return list(self.hidden)


class CNN(nn.Module):
    """Convolutional feature extractor + a classifier head (hidden layers, then the output)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, config: CNNConfig):
        super().__init__()
        self.input_shape = tuple(input_shape)
        blocks: list[nn.Module] = []
        in_channels = input_shape[0]
        for i, out_channels in enumerate(config.channels):
            blocks.append(
                nn.Conv2d(
                    in_channels,
                    out_channels,
                    config.kernel_size,
                    padding=config.padding,
                    bias=not config.batch_norm,
                )
            )
            if config.batch_norm:
                blocks.append(nn.BatchNorm2d(out_channels))
            blocks.append(activation(config.activation))
            if config.pool == "each" or i == len(config.channels) - 1:
                blocks.append(nn.MaxPool2d(2))
            in_channels = out_channels
        if config.dropout:
            blocks.append(nn.Dropout(config.dropout))
        self.features = nn.Sequential(*blocks)
        self.flatten_size = self._flatten_size(input_shape)
        head: list[nn.Module] = [nn.Flatten()]
        width = self.flatten_size
        for hidden in config.hidden_widths:
            head += [nn.Linear(width, hidden), activation(config.activation)]
            if config.dropout:
                head.append(nn.Dropout(config.dropout))
            width = hidden
        head.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*head)

    @torch.no_grad()
    def _flatten_size(self, input_shape: tuple[int, ...]) -> int:
        """Features per sample after the conv blocks, measured by running one zero image."""
        self.features.eval()  # keep batch-norm running statistics untouched
        try:
            out = self.features(torch.zeros(1, *input_shape))  # (1, C, H', W')
        except RuntimeError as exc:
            from dlab.errors import RecipeError

            raise RecipeError(
                f"model: the conv blocks shrink a {input_shape} input to nothing ({exc})"
            ) from None
        finally:
            self.features.train()
        return out[0].numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, C, H, W) -> (B, classes)


@MODELS.register(
    "cnn", config=CNNConfig, summary="conv net; defaults: the seed CNN (2 convs, 1 pool, fc 128)"
)
def build_cnn(config: CNNConfig, meta: DataMeta) -> CNN:
    """A CNN for images shaped like `meta.input_shape` (C, H, W)."""
    if len(meta.input_shape) != 3:
        from dlab.errors import RecipeError

        raise RecipeError(
            f"model.name: cnn needs (channels, height, width) images; {meta.dataset} gives shape {meta.input_shape}"
        )
    return CNN(meta.input_shape, task_of(meta).output_size(meta), config)


CIFAR_META = DataMeta(
    dataset="cifar10", input_shape=(3, 32, 32), num_classes=10, classes=[str(i) for i in range(10)]
)


class LeNetConfig(ModelConfig):
    """LeNet-5 as in PyTorch's CIFAR-10 tutorial: conv 6@5×5, pool, conv 16@5×5, pool, fc 120, fc 84."""

    activation: Literal["relu", "tanh", "sigmoid"] = Field(
        "relu", description="relu (the tutorial) or tanh (LeCun 1998)"
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before each fully connected layer")


class LeNet(nn.Module):
    """(B, C, 32, 32) or (B, C, 28, 28) -> class logits; the flatten size is measured, not assumed."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, config: LeNetConfig):
        super().__init__()
        act = config.activation
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], 6, 5),
            activation(act),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            activation(act),
            nn.MaxPool2d(2),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).numel()  # 16·5·5 for 32×32 inputs
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(flat, 120),
            activation(act),
            nn.Dropout(config.dropout),
            nn.Linear(120, 84),
            activation(act),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@MODELS.register(
    "lenet",
    config=LeNetConfig,
    summary="LeNet-5 of PyTorch's CIFAR-10 tutorial (seed 003)",
    example_meta=CIFAR_META,
)
def build_lenet(config: LeNetConfig, meta: DataMeta) -> LeNet:
    if len(meta.input_shape) != 3 or min(meta.input_shape[1:]) < 16:
        from dlab.errors import RecipeError

        raise RecipeError(
            f"model.name: lenet needs images of at least 16×16; {meta.dataset} gives {meta.input_shape}"
        )
    return LeNet(meta.input_shape, task_of(meta).output_size(meta), config)
