"""A small modern ResNet (He et al.): batch-norm, residual basic blocks, global average pooling.

    stem: conv 3×3 -> BN -> ReLU
    stages: `blocks` basic blocks per stage, width doubling and resolution halving between stages
    head: global average pool -> linear

With the defaults (widths 32/64/128, 2 blocks each) it has about 0.7M parameters, trains well on
28×28 and 32×32 images, and is dlab's best image classifier.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from dlab.data.bundle import DataMeta
from dlab.models.cnn import CIFAR_META
from dlab.recipe import ModelConfig
from dlab.registry import MODELS
from dlab.tasks import task_of


class ResNetConfig(ModelConfig):
    """Stage widths and depth of a small ResNet."""

    widths: list[int] = Field(
        default_factory=lambda: [32, 64, 128], min_length=1, description="channels of each stage"
    )
    blocks: int = Field(2, ge=1, description="basic blocks per stage")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the classifier")


class BasicBlock(nn.Module):
    """y = ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x))."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        nn.init.zeros_(self.bn2.weight)  # each block starts as the identity (Goyal et al.)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """(B, C, H, W) -> class logits."""

    def __init__(self, in_channels: int, num_classes: int, config: ResNetConfig):
        super().__init__()
        widths = config.widths
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        channels = widths[0]
        for index, width in enumerate(widths):
            for block in range(config.blocks):
                stride = 2 if index > 0 and block == 0 else 1
                stages.append(BasicBlock(channels, width, stride))
                channels = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(channels, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


@MODELS.register(
    "resnet",
    config=ResNetConfig,
    summary="small ResNet (batch-norm, residual blocks): the best image classifier here",
    example_meta=CIFAR_META,
)
def build_resnet(config: ResNetConfig, meta: DataMeta) -> ResNet:
    if len(meta.input_shape) != 3:
        from dlab.errors import RecipeError

        raise RecipeError(
            f"model.name: resnet needs (channels, height, width) images; {meta.dataset} gives {meta.input_shape}"
        )
    return ResNet(meta.input_shape[0], task_of(meta).output_size(meta), config)
