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


# a colour for each class of a mask or box (tab10, then tab20's lighter halves); background: none
PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
]


def as_rgb(image: torch.Tensor, scale: int) -> np.ndarray:
    """A (C, H, W) image in [0, 1] as (H·scale, W·scale, 3) uint8 pixels."""
    pixels = (image.clamp(0, 1).detach().cpu().numpy() * 255).round().astype(np.uint8)
    pixels = np.repeat(pixels, 3, axis=0) if len(pixels) == 1 else pixels[:3]
    return pixels.transpose(1, 2, 0).repeat(scale, axis=0).repeat(scale, axis=1)


def draw_boxes(
    image: torch.Tensor, boxes: list[tuple[float, float, float, float, int, str]], scale: int = 4
):
    """An image with a rectangle and a label per (x0, y0, x1, y1, class index, label), drawn
    in the class's colour on the image enlarged `scale` times (a PIL image)."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(as_rgb(image, scale))
    pen = ImageDraw.Draw(picture)
    for x0, y0, x1, y1, k, label in boxes:
        colour = PALETTE[k % len(PALETTE)]
        corners = [x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1]
        pen.rectangle(corners, outline=colour, width=2)
        pen.text((corners[0] + 2, max(corners[1] - 11, 0)), label, fill=colour)
    return picture


def overlay_mask(image: torch.Tensor, mask: torch.Tensor, scale: int = 4, alpha: float = 0.55):
    """An image with each non-zero class of `mask` (H, W) painted over it in its colour."""
    from PIL import Image

    base = as_rgb(image, 1).astype(np.float64)
    labels = mask.cpu().numpy()
    for value in np.unique(labels[labels > 0]):
        colour = np.array(PALETTE[(int(value) - 1) % len(PALETTE)], dtype=np.float64)
        where = labels == value
        base[where] = (1 - alpha) * base[where] + alpha * colour
    pixels = base.round().astype(np.uint8).repeat(scale, axis=0).repeat(scale, axis=1)
    return Image.fromarray(pixels)


def save_pictures(pictures: list, path: Path) -> Path:
    """PIL images side by side as one PNG at `path` (written atomically)."""
    from PIL import Image

    if path.suffix.lower() != ".png":
        raise InputError(f"{path}: write the picture as a .png file")
    width = sum(p.width for p in pictures) + GAP * (len(pictures) - 1)
    row = Image.new("RGB", (width, max(p.height for p in pictures)), (255, 255, 255))
    left = 0
    for picture in pictures:
        row.paste(picture, (left, 0))
        left += picture.width + GAP
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: row.save(tmp, format="PNG"))
    return path
