"""Turn a user's input (an image, an array, a file) into exactly what the model saw in training.

`predict` reads files with `load_input`; `serve` reads request bodies with `from_array` and
`from_image_bytes`: one preprocessing path, so a served model answers as the trained one did.
"""

from __future__ import annotations

import io
import math
import struct
from pathlib import Path

import numpy as np
import torch

from dlab.data.bundle import DataMeta
from dlab.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def accepted_shapes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The array shapes one input may come in: as trained, flattened, or without a single channel."""
    accepted = [tuple(shape), (math.prod(shape),)]
    if len(shape) == 3 and shape[0] == 1:
        accepted.append(tuple(shape[1:]))
    return sorted(set(accepted), key=len)


def from_array(array: np.ndarray, meta: DataMeta, source: str) -> torch.Tensor:
    """One input given as numbers. Images: integers, or floats above 1, are 0-255 pixel values."""
    array = np.asarray(array)
    if (
        not np.issubdtype(array.dtype, np.number)
        or np.issubdtype(array.dtype, np.complexfloating)
        or array.dtype == np.bool_
    ):
        raise InputError(f"{source}: array of {array.dtype}, expected numbers")
    shape = tuple(meta.input_shape)
    if tuple(array.shape) not in accepted_shapes(shape):
        options = " or ".join(str(s) for s in accepted_shapes(shape))
        raise InputError(
            f"{source}: array shape {tuple(array.shape)} does not fit the model input; expected {options}"
        )
    integers = np.issubdtype(array.dtype, np.integer)
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise InputError(f"{source}: array contains NaN or infinite values")
    if meta.input_kind == "image" and (integers or values.max(initial=0) > 1.0):
        values = values / 255.0
    return _normalise(values.reshape(shape), meta)


def _picture_array(picture, shape: tuple[int, ...], source: str, resize: bool) -> np.ndarray:
    from PIL import Image

    channels, height, width = shape
    picture = picture.convert("L" if channels == 1 else "RGB")
    if picture.size != (width, height):
        if not resize:
            raise InputError(
                f"{source}: image is {picture.size[0]}×{picture.size[1]} but the model takes {width}×{height}; pass --resize to scale it"
            )
        picture = picture.resize((width, height), Image.Resampling.LANCZOS)
    array = np.asarray(picture, dtype=np.float32) / 255.0
    return array[None] if channels == 1 else array.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)


def from_image_bytes(
    data: bytes, meta: DataMeta, source: str, resize: bool = False, invert: str = "auto"
) -> torch.Tensor:
    """One PNG/JPEG image, converted, (optionally) resized and normalised."""
    from PIL import Image, UnidentifiedImageError

    if meta.input_kind != "image" or len(meta.input_shape) != 3:
        raise InputError(f"{source}: this model takes {meta.input_kind} inputs, not images")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            array = _picture_array(image, tuple(meta.input_shape), source, resize)
    except UnidentifiedImageError:
        raise InputError(f"{source}: not an image (PNG or JPEG) nor a .npy array") from None
    except Image.DecompressionBombError:
        raise InputError(
            f"{source}: the image declares over {2 * Image.MAX_IMAGE_PIXELS:,} pixels; refused"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:  # Pillow's ways
        raise InputError(f"{source}: unreadable image ({exc})") from None
    return _normalise(_match_background(array, meta, invert), meta)


def load_input(
    path: str | Path, meta: DataMeta, resize: bool = False, invert: str = "auto"
) -> torch.Tensor:
    """One input file (PNG/JPEG image or .npy array) as a normalised tensor shaped like the training inputs."""
    path = Path(path)
    if meta.audio is not None:
        if path.suffix.lower() != ".wav":
            raise InputError(f"{path}: this model hears sounds: give a .wav file")
        return from_wav(path, meta)
    if meta.input_kind not in ("image", "vector"):
        raise InputError(
            f"{path}: file inputs are for image and vector models; this model takes {meta.input_kind}"
        )
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"{path}: not a readable .npy array ({exc})") from None
        return from_array(array, meta, str(path))
    if meta.input_kind == "image" and len(meta.input_shape) == 3:
        return from_image_bytes(path.read_bytes(), meta, str(path), resize, invert)
    raise InputError(f"{path}: expected a .npy array of shape {tuple(meta.input_shape)}")


def from_wav(source: str | Path | bytes, meta: DataMeta, name: str | None = None) -> torch.Tensor:
    """One WAV clip as the model's standardised (frames, features) input, computed exactly as
    the training clips were; a clip longer than the model's frames is refused."""
    from dlab.data.audio import features, read_wav
    from dlab.data.speech import pad_front

    config = meta.audio
    name = name or str(source)
    frames = features(read_wav(source, config.rate, name), config).numpy()
    limit = meta.input_shape[0]
    if len(frames) > limit:
        seconds = limit * config.hop / config.rate
        raise InputError(
            f"{name}: {len(frames)} frames ({len(frames) * config.hop / config.rate:.2f} s); "
            f"the model takes at most {limit} ({seconds:.2f} s): cut the clip"
        )
    scaled = (frames - np.asarray(meta.mean)) / np.asarray(meta.std)
    from dlab.tasks import task_of

    if task_of(meta).outputs_every_step:  # utterances were padded with silence at their end
        padded = np.zeros((limit, scaled.shape[1]), dtype=np.float32)
        padded[: len(scaled)] = scaled
        return torch.from_numpy(padded)
    return pad_front([scaled], limit)[0]  # single clips were padded in front


def _normalise(values: np.ndarray, meta: DataMeta) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
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
    trained_dark = getattr(meta.details, "dark_background", None)
    if trained_dark is None or array.shape[0] != 1:
        return array
    image = array[0]
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    looks_dark = border.mean() < 0.5
    return array if looks_dark == trained_dark else 1.0 - array
