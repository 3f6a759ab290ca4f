"""Image and sound augmentation as batched tensor operations: one call per batch, on whatever
device holds it.

Random numbers come from torch's global generator of the batch's device, which checkpoints save,
so an augmented run still resumes exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from dlab.recipe import AugmentConfig, SoundAugmentConfig


def random_crop(images: torch.Tensor, padding: int, fill: str = "zeros") -> torch.Tensor:
    """Pad (B, C, H, W) images by `padding` (zeros, or the image mirrored: fill="reflect") and
    cut each back to H×W at a random offset."""
    batch, _, height, width = images.shape
    mode = "reflect" if fill == "reflect" else "constant"
    padded = F.pad(images, (padding,) * 4, mode=mode)  # (B, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * padding + 1, (batch, 1), device=images.device)
    dx = torch.randint(0, 2 * padding + 1, (batch, 1), device=images.device)
    rows = (dy + torch.arange(height, device=images.device))[:, :, None]  # (B, H, 1)
    cols = (dx + torch.arange(width, device=images.device))[:, None, :]  # (B, 1, W)
    index = torch.arange(batch, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[index, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)


def random_flip(images: torch.Tensor) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def cutout(images: torch.Tensor, size: int) -> torch.Tensor:
    """Zero one size×size square (clipped at the border) at a random centre in each image."""
    batch, _, height, width = images.shape
    cy = torch.randint(0, height, (batch, 1, 1), device=images.device)
    cx = torch.randint(0, width, (batch, 1, 1), device=images.device)
    ys = torch.arange(height, device=images.device)[None, :, None]
    xs = torch.arange(width, device=images.device)[None, None, :]
    half = size // 2
    inside = (
        (ys >= cy - half) & (ys < cy - half + size) & (xs >= cx - half) & (xs < cx - half + size)
    )  # (B, H, W)
    return images * ~inside[:, None]


def build_augment(config: AugmentConfig | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The batch transform a recipe asks for, or None."""
    if config is None or not (config.crop_padding or config.flip or config.cutout):
        return None

    def augment(images: torch.Tensor) -> torch.Tensor:
        if config.crop_padding:
            images = random_crop(images, config.crop_padding, config.crop_fill)
        if config.flip:
            images = random_flip(images)
        if config.cutout:
            images = cutout(images, config.cutout)
        return images

    return augment


# --- sound: batches of (B, T, F) feature frames -------------------------------------------------


def time_shift(frames: torch.Tensor, most: int) -> torch.Tensor:
    """Move each clip by up to `most` frames earlier or later, zeros (silence) filling in."""
    batch, length, _ = frames.shape
    shift = torch.randint(-most, most + 1, (batch, 1), device=frames.device)
    source = torch.arange(length, device=frames.device)[None, :] - shift  # (B, T)
    inside = (source >= 0) & (source < length)
    index = torch.arange(batch, device=frames.device)[:, None]
    return frames[index, source.clamp(0, length - 1)] * inside[..., None]


def add_noise(frames: torch.Tensor, snr_db: float) -> torch.Tensor:
    """Gaussian noise at a signal-to-noise ratio of `snr_db` per clip (power over its frames)."""
    power = frames.pow(2).mean(dim=(1, 2), keepdim=True)
    scale = (power / 10 ** (snr_db / 10)).sqrt()
    return frames + torch.randn_like(frames) * scale


def spec_masks(frames: torch.Tensor, count: int, width: int, dim: int) -> torch.Tensor:
    """SpecAugment (Park et al. 2019): zero `count` bands of up to `width` time steps (dim 1) or
    feature channels (dim 2) in each clip."""
    batch, size = frames.shape[0], frames.shape[dim]
    positions = torch.arange(size, device=frames.device)[None, :]
    keep = torch.ones(batch, size, dtype=torch.bool, device=frames.device)
    for _ in range(count):
        band = torch.randint(0, width + 1, (batch, 1), device=frames.device)
        start = (torch.rand(batch, 1, device=frames.device) * (size - band + 1)).long()
        keep &= ~((positions >= start) & (positions < start + band))
    return frames * (keep[:, :, None] if dim == 1 else keep[:, None, :])


def build_sound_augment(config: SoundAugmentConfig | None) -> Callable | None:
    """The batch transform of a sound data set's `augment` section, or None."""
    if config is None or not config.active:
        return None

    def augment(frames: torch.Tensor) -> torch.Tensor:
        if config.shift:
            frames = time_shift(frames, config.shift)
        if config.snr_db is not None:
            frames = add_noise(frames, config.snr_db)
        if config.time_masks:
            frames = spec_masks(frames, config.time_masks, config.time_width, dim=1)
        if config.freq_masks:
            frames = spec_masks(frames, config.freq_masks, config.freq_width, dim=2)
        return frames

    return augment
