"""Images as files: a grid of pixel tensors written as one PNG (Pillow, written atomically)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from dlab._io import atomic_write
from dlab.errors import InputError

GAP = 2  # pixels between the images of a grid


def save_grid(images: torch.Tensor, path: Path, columns: int | None = None, scale: int = 2) -> Path:
    """(N, C, H, W) images with pixels in [0, 1] as one PNG, `columns` per row (default: a
    square), each enlarged `scale` times."""
    from PIL import Image

    if path.suffix.lower() != ".png":
        raise InputError(f"{path}: write the images as a .png file")
    n, channels, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = np.ones((rows * (height + GAP) + GAP, columns * (width + GAP) + GAP, channels))
    for k, image in enumerate(images.clamp(0, 1).detach().cpu().numpy()):
        top, left = GAP + (k // columns) * (height + GAP), GAP + (k % columns) * (width + GAP)
        canvas[top : top + height, left : left + width] = image.transpose(1, 2, 0)
    pixels = (canvas * 255).round().astype(np.uint8)
    picture = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    picture = picture.resize(
        (picture.width * scale, picture.height * scale), Image.Resampling.NEAREST
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
    return path
