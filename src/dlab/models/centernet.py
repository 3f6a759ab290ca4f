"""CenterNet, "objects as points" (Zhou, Wang & Krähenbühl 2019): a detector with no anchors and
no non-maximum suppression.

Every object is the peak of a heat map of its class at a quarter of the input size; beside the
heat maps the model regresses, at each position, the box's width and height and the sub-cell
offset of its centre. Decoding (`dlab.tasks.detection.decode`) keeps the positions that are the
maximum of their 3×3 neighbourhood: a max-pool does what NMS does elsewhere, with tensor
operations alone, which matters here because torchvision's compiled operators do not load.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, field_validator
from torch import nn

from dlab.data.bundle import DataMeta
from dlab.models.unet import Trunk, conv_bn, require_divisible, scenes_meta
from dlab.recipe import ModelConfig
from dlab.registry import MODELS
from dlab.tasks.detection import STRIDE

PRIOR = 0.1  # the heat maps start by calling 10% of positions centres (focal-loss init)


class CenterNetConfig(ModelConfig):
    """CenterNet on a small U-Net trunk: class heat maps, box sizes and centre offsets."""

    widths: list[int] = Field(
        [16, 32, 64, 96],
        description="trunk channels per level, from half the input size down (each level halves it)",
    )
    head_width: int = Field(64, ge=1, description="channels of the 3×3 layer the heads share")

    @field_validator("widths")
    @classmethod
    def _levels(cls, value: list[int]) -> list[int]:
        if len(value) < 3 or min(value) < 1:
            raise ValueError(f"should be at least three positive widths (got {value})")
        return value


class CenterNet(nn.Module):
    """(B, C, H, W) -> (B, classes + 4, H/4, W/4): per class a centre logit, then the box width
    and height in cells, then the centre's offset (x, y) within its cell."""

    def __init__(self, channels: int, classes: int, config: CenterNetConfig):
        super().__init__()
        # level i of the trunk works at 1/2^(i+1) of the input: features at 1/STRIDE
        self.trunk = Trunk(channels, config.widths, out_level=STRIDE.bit_length() - 2)
        self.neck = conv_bn(self.trunk.out_channels, config.head_width)
        self.heat = nn.Conv2d(config.head_width, classes, 1)
        self.size = nn.Conv2d(config.head_width, 2, 1)
        self.offset = nn.Conv2d(config.head_width, 2, 1)
        nn.init.constant_(self.heat.bias, -math.log((1 - PRIOR) / PRIOR))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.neck(self.trunk(x))  # (B, head_width, H/4, W/4)
        return torch.cat([self.heat(features), self.size(features), self.offset(features)], dim=1)


@MODELS.register(
    "centernet",
    config=CenterNetConfig,
    summary="CenterNet: objects as heat-map peaks with sizes and offsets (detection)",
    tasks=("detection",),
    inputs=("image",),
    example_meta=scenes_meta("detection"),
)
def build_centernet(config: CenterNetConfig, meta: DataMeta) -> CenterNet:
    require_divisible("centernet", meta, len(config.widths))
    return CenterNet(meta.input_shape[0], int(meta.num_classes or 1), config)
