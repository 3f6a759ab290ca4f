"""The airbench network (Keller Jordan, 2024): CIFAR-10 to 94% with few FLOPs.

    whiten: conv k×k (2·C·k² filters, fixed) -> GELU      the patch-whitening layer
    groups: conv 3×3 -> max-pool 2 -> BN -> GELU -> conv 3×3 -> BN -> GELU    (× len(widths))
    head:   global max-pool -> linear (no bias) -> × logit_scale

What makes it fast, each a field below:
- The first layer is not learned. Before the first step it is set from the training images
  (`see_training_data`): its filters are the eigenvectors of the k×k patches' covariance, scaled
  by 1/√eigenvalue, and their negatives, so the next layer sees decorrelated patches.
- Every 3×3 convolution starts as the identity on its first `in` channels (Dirac init).
- Batch-norm scales are frozen at 1 (`train_norm_weights: false`): only the shifts learn, which
  airbench trains with a 64× learning rate (`train.optimizer.norm_lr_scale`).
- Test-time augmentation (`tta`): in eval mode the logits are the mean over mirrored and
  one-pixel-shifted views (the views airbench weighs: half the original, half the shifts).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from dlab.data.bundle import DataMeta
from dlab.errors import RecipeError
from dlab.models.cnn import CIFAR_META
from dlab.recipe import ModelConfig
from dlab.registry import MODELS
from dlab.tasks import task_of


class AirbenchConfig(ModelConfig):
    """Widths and switches of the airbench network."""

    widths: list[int] = Field(
        default_factory=lambda: [64, 256, 256],
        min_length=1,
        description="channels of each conv group (each halves the resolution)",
    )
    whiten_kernel: int = Field(2, ge=1, le=5, description="patch side k of the whitening layer")
    whiten_images: int = Field(
        5000, ge=1, description="training images whose patches set the whitening layer"
    )
    norm_momentum: float = Field(
        0.4,
        gt=0,
        le=1,
        description="batch-norm running-statistics momentum (torch's convention: the new "
        "batch's weight; airbench's 0.6 is 1 - 0.4)",
    )
    train_norm_weights: bool = Field(
        False, description="learn batch-norm scales too (airbench keeps them at 1)"
    )
    logit_scale: float = Field(
        1 / 9, gt=0, description="the logits are multiplied by this (a temperature)"
    )
    tta: Literal["none", "flip", "flip_translate"] = Field(
        "flip_translate",
        description="test-time augmentation in eval mode: none; the mean of the image and its "
        "mirror; or that, averaged with the mirrored pair of 1-pixel shifts up-left and down-right",
    )


def dirac_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3×3 'same' convolution, no bias, whose first `in_channels` filters start as the
    identity (the rest keep PyTorch's default initialisation)."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(in_channels, out_channels)])
    return conv


class ConvGroup(nn.Module):
    """conv -> max-pool 2 -> BN -> GELU -> conv -> BN -> GELU."""

    def __init__(self, in_channels: int, out_channels: int, config: AirbenchConfig):
        super().__init__()
        self.conv1 = dirac_conv(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(out_channels, eps=1e-12, momentum=config.norm_momentum)
        self.conv2 = dirac_conv(out_channels, out_channels)
        self.norm2 = nn.BatchNorm2d(out_channels, eps=1e-12, momentum=config.norm_momentum)
        self.activation = nn.GELU()
        for norm in (self.norm1, self.norm2):
            norm.weight.requires_grad_(config.train_norm_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.norm1(self.pool(self.conv1(x))))
        return self.activation(self.norm2(self.conv2(x)))


def whitening_filters(images: torch.Tensor, kernel: int, eps: float = 5e-4) -> torch.Tensor:
    """(2·C·k², C, k, k) filters that whiten the k×k patches of `images` (B, C, H, W): the
    eigenvectors of the patch covariance over √(eigenvalue + eps), largest first, then their
    negatives (so that a GELU after them keeps both signs)."""
    channels = images.shape[1]
    patches = images.double().unfold(2, kernel, 1).unfold(3, kernel, 1)  # B, C, H', W', k, k
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, channels * kernel * kernel)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)
    filters = eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]
    filters = filters.reshape(-1, channels, kernel, kernel)
    return torch.cat([filters, -filters]).float()


class Airbench(nn.Module):
    """(B, C, H, W) images -> class logits."""

    def __init__(self, in_channels: int, num_classes: int, config: AirbenchConfig):
        super().__init__()
        self.config = config
        k = config.whiten_kernel
        self.whiten = nn.Conv2d(in_channels, 2 * in_channels * k * k, k, bias=True)
        self.whiten.weight.requires_grad_(False)  # set from the data, never learned
        nn.init.zeros_(self.whiten.bias)
        groups, channels = [], self.whiten.out_channels
        for width in config.widths:
            groups.append(ConvGroup(channels, width, config))
            channels = width
        self.groups = nn.Sequential(*groups)
        self.head = nn.Linear(channels, num_classes, bias=False)

    @torch.no_grad()
    def see_training_data(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Set the whitening layer from the patches of the first `whiten_images` images."""
        images = inputs[: self.config.whiten_images].to(self.whiten.weight.device)
        self.whiten.weight.copy_(whitening_filters(images, self.config.whiten_kernel))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(F.gelu(self.whiten(x)))
        x = torch.amax(x, dim=(2, 3))  # global max-pool (airbench's 3×3 pool of a 3×3 map)
        return self.head(x) * self.config.logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tta = self.config.tta
        if self.training or tta == "none":
            return self.logits(x)
        mirrored = 0.5 * (self.logits(x) + self.logits(x.flip(-1)))
        if tta == "flip":
            return mirrored
        height, width = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = [padded[..., :height, :width], padded[..., 2:, 2:]]
        translated = sum(0.5 * (self.logits(s) + self.logits(s.flip(-1))) for s in shifted)
        return 0.5 * mirrored + 0.25 * translated


@MODELS.register(
    "airbench",
    config=AirbenchConfig,
    summary="airbench (Jordan): patch-whitened fast CNN, CIFAR-10 94% in few FLOPs",
    example_meta=CIFAR_META,
)
def build_airbench(config: AirbenchConfig, meta: DataMeta) -> Airbench:
    if len(meta.input_shape) != 3 or min(meta.input_shape[1:]) < 2 ** len(config.widths) + 1:
        raise RecipeError(
            f"model.name: airbench needs (channels, height, width) images at least "
            f"{2 ** len(config.widths) + 1} pixels a side for {len(config.widths)} groups; "
            f"{meta.dataset} gives {meta.input_shape}"
        )
    return Airbench(meta.input_shape[0], task_of(meta).output_size(meta), config)
