"""Turn a user's file (PNG/JPEG image or .npy array) into exactly what the model saw in training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from dlab.data.bundle import DataMeta
from dlab.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _from_image(path: Path, shape: tuple[int, ...], resize: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    channels, height, width = shape
    try:
        with Image.open(path) as image:
            image.load()
            picture = image.convert("L" if channels == 1 else "RGB")
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image (PNG or JPEG) nor a .npy array") from None
    except OSError as exc:
        raise InputError(f"{path}: unreadable image ({exc})") from None
    if picture.size != (width, height):
        if not resize:
            raise InputError(
                f"{path}: image is {picture.size[0]}×{picture.size[1]} but the model takes {width}×{height}; "
                f"pass --resize to scale it"
            )
        picture = picture.resize((width, height), Image.Resampling.LANCZOS)
    array = np.asarray(picture, dtype=np.float32) / 255.0
    return array[None] if channels == 1 else array.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)


def _from_npy(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"{path}: array of {array.dtype}, expected numbers")
    accepted = {tuple(shape), (math.prod(shape),)}
    if len(shape) == 3 and shape[0] == 1:
        accepted.add(tuple(shape[1:]))
    if tuple(array.shape) not in accepted:
        options = " or ".join(str(s) for s in sorted(accepted, key=len))
        raise InputError(
            f"{path}: array shape {tuple(array.shape)} does not fit the model input; expected {options}"
        )
    integers = np.issubdtype(array.dtype, np.integer)
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise InputError(f"{path}: array contains NaN or infinite values")
    # integer arrays, and float arrays above 1, hold 0-255 pixel values; other floats are 0-1
    if integers or array.max(initial=0) > 1.0:
        array = array / 255.0
    return array.reshape(shape)


def load_input(
    path: str | Path, meta: DataMeta, resize: bool = False, invert: str = "auto"
) -> torch.Tensor:
    """One input file as a normalised tensor shaped like the training inputs."""
    path = Path(path)
    if meta.input_kind not in ("image", "vector"):
        raise InputError(
            f"{path}: file inputs are for image and vector models; this model takes {meta.input_kind}"
        )
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    shape = tuple(meta.input_shape)
    if path.suffix.lower() == ".npy":
        array = _from_npy(path, shape)
    elif meta.input_kind == "image" and len(shape) == 3:
        array = _from_image(path, shape, resize)
        array = _match_background(array, meta, invert)
    else:
        raise InputError(f"{path}: expected a .npy array of shape {shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if meta.mean is not None and meta.std is not None:
        view = (-1,) + (1,) * (tensor.ndim - 1) if meta.input_kind == "image" else (-1,)
        tensor = (tensor - torch.tensor(meta.mean).view(view)) / torch.tensor(meta.std).view(view)
    return tensor.float()


def _match_background(array: np.ndarray, meta: DataMeta, invert: str) -> np.ndarray:
    """Invert a dark-on-light drawing for a model trained on light-on-dark images (and vice versa)."""
    if invert == "never":
        return array
    if invert == "always":
        return 1.0 - array
    trained_dark = meta.extra.get("dark_background")
    if trained_dark is None or array.shape[0] != 1:
        return array
    image = array[0]
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    looks_dark = border.mean() < 0.5
    return array if looks_dark == trained_dark else 1.0 - array
