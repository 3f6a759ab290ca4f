"""U-Net (Ronneberger et al. 2015): an encoder that halves the resolution level by level and a
decoder that doubles it back, joining at each level the encoder's features of the same size (the
skip connections that keep fine detail). Semantic segmentation reads a class per pixel from it;
CenterNet (`centernet.py`) reads its heat maps from the same trunk at a quarter of the input size.

To stay light on a CPU the first level is a stride-2 stem (the encoder starts at half the input
size) and each decoder level is one 3×3 convolution; the segmentation logits come out at half
size and are upsampled bilinearly to the input's pixels.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from dlab.data.bundle import DataMeta
from dlab.errors import RecipeError
from dlab.recipe import ModelConfig
from dlab.registry import MODELS


def conv_bn(inputs: int, outputs: int, stride: int = 1) -> nn.Sequential:
    """3×3 convolution, batch norm, ReLU (the bias is the norm's shift)."""
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


class Trunk(nn.Module):
    """Encoder + decoder: (B, C, H, W) -> features (B, widths[out_level], H/2^(out_level+1), ...).

    Level i of the encoder works at 1/2^(i+1) of the input size with widths[i] channels; the
    decoder climbs back from the deepest level to `out_level`.
    """

    def __init__(self, channels: int, widths: list[int], out_level: int = 0):
        super().__init__()
        self.stem = nn.Sequential(
            conv_bn(channels, widths[0], stride=2), conv_bn(widths[0], widths[0])
        )
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), conv_bn(w_in, w_out), conv_bn(w_out, w_out))
            for w_in, w_out in itertools.pairwise(widths)
        )
        # up[i] joins the level below (widths[i + 1] channels, upsampled) with level i's skip
        self.up = nn.ModuleList(
            conv_bn(widths[i + 1] + widths[i], widths[i]) for i in range(out_level, len(widths) - 1)
        )
        self.out_level = out_level
        self.out_channels = widths[out_level]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]  # (B, w0, H/2, W/2)
        for down in self.down:
            skips.append(down(skips[-1]))  # (B, w_i, H/2^(i+1), W/2^(i+1))
        x = skips.pop()
        for up in reversed(self.up):
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")  # (B, w_{i+1}, 2h, 2w)
            x = up(torch.cat([x, skip], dim=1))  # (B, w_i, 2h, 2w)
        return x


class UNetConfig(ModelConfig):
    """U-Net for semantic segmentation: a class (or background) for every pixel."""

    widths: list[int] = Field(
        [16, 32, 64, 128],
        description="channels per level, from half the input size down (each level halves it)",
    )

    @field_validator("widths")
    @classmethod
    def _levels(cls, value: list[int]) -> list[int]:
        if len(value) < 2 or min(value) < 1:
            raise ValueError(f"should be at least two positive widths (got {value})")
        return value


class UNet(nn.Module):
    """(B, C, H, W) -> per-pixel logits (B, classes + 1, H, W); channel 0 is the background."""

    def __init__(self, channels: int, outputs: int, config: UNetConfig):
        super().__init__()
        self.trunk = Trunk(channels, config.widths, out_level=0)
        self.head = nn.Conv2d(self.trunk.out_channels, outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.trunk(x))  # (B, K, H/2, W/2)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def require_divisible(name: str, meta: DataMeta, levels: int) -> None:
    """A RecipeError unless `meta`'s images can be halved `levels` times exactly."""
    if len(meta.input_shape) != 3:
        raise RecipeError(
            f"model.name: {name} needs images; {meta.dataset} gives {meta.input_shape}"
        )
    factor = 2**levels
    if any(side % factor for side in meta.input_shape[1:]):
        raise RecipeError(
            f"model.name: {name} halves its input {levels} times, so each side must be a multiple "
            f"of {factor}; {meta.dataset} gives {meta.input_shape[1]}×{meta.input_shape[2]}"
        )


def scenes_meta(task: str) -> DataMeta:
    """Small digit scenes of `task` (detection or segmentation): what the scene models are
    shown with when no data set is given (`dlab list models`, the registry-wide tests)."""
    return DataMeta(
        dataset="digit_scenes",
        task=task,
        input_shape=(1, 32, 32),
        num_classes=10,
        classes=[str(d) for d in range(10)],
        details={"max_objects": 4},
    )


@MODELS.register(
    "unet",
    config=UNetConfig,
    summary="U-Net: encoder, decoder and skips; a class for every pixel (segmentation)",
    tasks=("segmentation",),
    inputs=("image",),
    example_meta=scenes_meta("segmentation"),
)
def build_unet(config: UNetConfig, meta: DataMeta) -> UNet:
    from dlab.tasks import task_of

    require_divisible("unet", meta, len(config.widths))
    return UNet(meta.input_shape[0], task_of(meta).output_size(meta), config)
