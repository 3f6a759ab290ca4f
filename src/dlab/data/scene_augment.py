"""Training-time augmentation of scenes that moves boxes and masks with the pixels.

Whole batches at once: a random half of the batch is mirrored left-right, another half
top-bottom, each image turned by a random multiple of 90° (square images), and its channels
scaled and shifted a little. The random numbers are a function of (seed, epoch, batch index), so
an interrupted run resumes with exactly the augmentation it would have had. Mirrors and turns
suit aerial photographs and most objects; not digits, whose meaning changes (a mirrored 2 is no
2), so the digit-scene recipes leave them off.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from pydantic import Field

from dlab.data.bundle import Batch, TensorLoader
from dlab.recipe.schema import Section


class SceneAugmentConfig(Section):
    """Augmentation of scenes and photos; boxes and masks follow the pixels."""

    flip: bool = Field(False, description="mirror left-right and top-bottom (each half the images)")
    rotate: bool = Field(False, description="turn by a random multiple of 90° (square images)")
    colour: float = Field(
        0.0, ge=0, le=1, description="scale each channel by 1 ± this and shift it by up to this"
    )
    zoom: float = Field(
        0.0,
        ge=0,
        le=1,
        description="enlarge by up to 1 + this: a random window of each image, scaled back to full "
        "size (one scale per batch); a box whose centre leaves the window is dropped",
    )

    @property
    def active(self) -> bool:
        return self.flip or self.rotate or self.colour > 0 or self.zoom > 0


def flip_boxes(boxes: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """Boxes (.., 5: class, x0, y0, x1, y1) mirrored along x (axis 0) or y (axis 1) of an image
    `size` pixels across; padding rows (class -1) stay as they are."""
    out = boxes.clone()
    real = boxes[..., 0] >= 0
    low, high = 1 + axis, 3 + axis
    out[..., low] = torch.where(real, size - boxes[..., high], boxes[..., low])
    out[..., high] = torch.where(real, size - boxes[..., low], boxes[..., high])
    return out


def turn_boxes(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Boxes turned with their square image by torch.rot90(image, 1, dims=(-2, -1)), a quarter
    turn counter-clockwise: a pixel at (x, y) moves to (y, size - 1 - x)."""
    out = boxes.clone()
    real = boxes[..., 0] >= 0
    x0, y0, x1, y1 = boxes[..., 1], boxes[..., 2], boxes[..., 3], boxes[..., 4]
    for index, value in ((1, y0), (2, size - x1), (3, y1), (4, size - x0)):
        out[..., index] = torch.where(real, value, boxes[..., index])
    return out


def zoom_in(
    x: torch.Tensor, y: torch.Tensor, amount: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's random window of 1/scale of its side (scale drawn once per batch from
    [1, 1 + amount]) scaled back up: bilinear pixels, nearest mask, boxes shifted, scaled and
    clipped; a box whose centre falls outside its window becomes padding."""
    import torch.nn.functional as F

    batch, _, height, width = x.shape
    scale = 1 + amount * float(torch.rand(1, generator=generator))
    h, w = round(height / scale), round(width / scale)
    tops = torch.randint(0, height - h + 1, (batch,), generator=generator).tolist()
    lefts = torch.randint(0, width - w + 1, (batch,), generator=generator).tolist()
    windows = torch.stack(
        [
            x[i, :, top : top + h, left : left + w]
            for i, (top, left) in enumerate(zip(tops, lefts, strict=True))
        ]
    )
    x = F.interpolate(windows, size=(height, width), mode="bilinear", align_corners=False)
    sy, sx = height / h, width / w
    if y.ndim == 3 and y.shape[-1] == 5 and y.dtype.is_floating_point:  # boxes
        y = y.clone()
        shift = torch.tensor(
            [[left, top, left, top] for top, left in zip(tops, lefts, strict=True)], dtype=y.dtype
        )
        moved = (y[..., 1:] - shift[:, None].to(y.device)) * torch.tensor(
            [sx, sy, sx, sy], device=y.device
        )
        centre_x, centre_y = (
            (moved[..., 0] + moved[..., 2]) / 2,
            (moved[..., 1] + moved[..., 3]) / 2,
        )
        inside = (centre_x >= 0) & (centre_x < width) & (centre_y >= 0) & (centre_y < height)
        real = (y[..., 0] >= 0) & inside
        clipped = torch.stack(
            [moved[..., 0].clamp(0, width), moved[..., 1].clamp(0, height),
             moved[..., 2].clamp(0, width), moved[..., 3].clamp(0, height)], dim=-1
        )  # fmt: skip
        y[..., 1:] = torch.where(real[..., None], clipped, y[..., 1:])
        y[..., 0] = torch.where(real, y[..., 0], torch.full_like(y[..., 0], -1.0))
        return x, y
    masks = torch.stack(
        [
            y[i, top : top + h, left : left + w]
            for i, (top, left) in enumerate(zip(tops, lefts, strict=True))
        ]
    )
    masks = F.interpolate(masks[:, None].float(), size=(height, width), mode="nearest-exact")[:, 0]
    return x, masks.to(y.dtype)


def augment_scenes(
    x: torch.Tensor, y: torch.Tensor, config: SceneAugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of images (B, C, H, W) with boxes (B, K, 5) or masks (B, H, W), augmented."""
    x, y = x.clone(), y.clone()
    boxes = y.ndim == 3 and y.shape[-1] == 5 and y.dtype.is_floating_point
    batch, _, height, width = x.shape
    if config.flip:
        for axis, dim in ((0, -1), (1, -2)):  # left-right, then top-bottom
            chosen = (torch.rand(batch, generator=generator) < 0.5).to(x.device)
            x[chosen] = x[chosen].flip(dim)
            if boxes:
                y[chosen] = flip_boxes(y[chosen], width if axis == 0 else height, axis)
            else:
                y[chosen] = y[chosen].flip(dim)
    if config.rotate and height == width:
        turns = torch.randint(0, 4, (batch,), generator=generator).to(x.device)
        for k in range(1, 4):
            chosen = turns == k
            x[chosen] = torch.rot90(x[chosen], k, dims=(-2, -1))
            if boxes:
                for _ in range(k):
                    y[chosen] = turn_boxes(y[chosen], width)
            else:
                y[chosen] = torch.rot90(y[chosen], k, dims=(-2, -1))
    if config.zoom:
        x, y = zoom_in(x, y, config.zoom, generator)
    if config.colour:
        channels = x.shape[1]
        gain = 1 + config.colour * (2 * torch.rand(batch, channels, 1, 1, generator=generator) - 1)
        shift = config.colour * (2 * torch.rand(batch, channels, 1, 1, generator=generator) - 1)
        x = x * gain.to(x.device) + shift.to(x.device)
    return x, y


class AugmentedScenes(TensorLoader):
    """A TensorLoader whose training batches are augmented with their targets."""

    def __init__(self, *args, augment: SceneAugmentConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.augment = augment

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        for i, (x, y) in enumerate(super().epoch(epoch, start), start=start):
            state = np.random.SeedSequence([self.seed & 0xFFFFFFFF, epoch, i]).generate_state(2)
            generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
            yield augment_scenes(x, y, self.augment, generator)
