"""A user's own images: one sub-folder per class, PNG or JPEG files inside (ImageNet-style)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import Dataset

from dlab.data.bundle import ArraySplits, DataBundle, DataMeta, split_off
from dlab.errors import DataError
from dlab.recipe import ImageDataConfig
from dlab.registry import DATASETS

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


class ImageFolderConfig(ImageDataConfig):
    """Images in <path>/<class name>/<file>.png|jpg, resized to one size."""

    path: str = Field(description="folder holding one sub-folder per class")
    image_size: tuple[int, int] = Field(
        (32, 32), description="(height, width) every image is resized to"
    )
    channels: Literal[1, 3] = Field(3, description="1: greyscale, 3: RGB")
    test_size: float = Field(
        0.2, ge=0, lt=1, description="fraction held out as the test split (stratified, fixed)"
    )


def scan(root: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Files, labels and class names of a class-per-sub-folder tree, in a fixed order."""
    if not root.is_dir():
        raise DataError(f"data.path: {root} is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(
            f"data.path: {root} needs at least two class sub-folders, found {len(classes)}"
        )
    files, labels = [], []
    for index, name in enumerate(classes):
        members = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in SUFFIXES)
        if not members:
            raise DataError(f"data.path: class folder {root / name} holds no PNG or JPEG files")
        files += members
        labels += [index] * len(members)
    return files, np.asarray(labels, dtype=np.int64), classes


def read_image(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image as uint8 (C, H, W), converted and resized."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            picture = image.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    if picture.size != (size[1], size[0]):
        picture = picture.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.array(picture, dtype=np.uint8)  # a writable copy (torch refuses read-only buffers)
    return array[None] if channels == 1 else np.ascontiguousarray(array.transpose(2, 0, 1))


class FolderImages(Dataset):
    """Decodes images on demand (in DataLoader workers) and normalises them."""

    def __init__(
        self,
        files: list[Path],
        labels: np.ndarray,
        config: ImageFolderConfig,
        mean: torch.Tensor,
        std: torch.Tensor,
    ):
        self.files, self.labels, self.config = files, labels, config
        self.mean, self.std = mean.view(-1, 1, 1), std.view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = read_image(self.files[index], self.config.image_size, self.config.channels)
        return (torch.from_numpy(image).float() / 255 - self.mean) / self.std, int(
            self.labels[index]
        )


@DATASETS.register(
    "image_folder",
    size="yours",
    config=ImageFolderConfig,
    summary="your own images: one sub-folder per class (PNG/JPEG), resized",
    splits="from data.val_size and data.test_size",
    source="data.path",
)
def build_image_folder(config: ImageFolderConfig, seed: int = 0) -> ArraySplits | DataBundle:
    """In memory by default; with loader: workers, decoded lazily by DataLoader workers."""
    files, labels, classes = scan(Path(config.path).expanduser())
    index = np.arange(len(files))
    rest, test = split_off(index, labels, config.test_size, config.split_seed + 1)
    if config.loader == "memory":

        def load(ids: np.ndarray) -> np.ndarray:
            return np.stack([read_image(files[i], config.image_size, config.channels) for i in ids])

        return ArraySplits(
            train=(load(rest[0]), rest[1]),
            test=(load(test[0]), test[1]) if test else None,
            classes=classes,
        )
    return _lazy_bundle(files, rest, test, classes, config, seed)


def _lazy_bundle(files, rest, test, classes, config: ImageFolderConfig, seed: int) -> DataBundle:
    from dlab.data.augment import build_augment
    from dlab.data.bundle import subsample
    from dlab.data.workers import WorkerLoader

    (train_ids, train_y), val = split_off(*rest, config.val_size, config.split_seed)
    train_ids, train_y = subsample(train_ids, train_y, config.limit, config.split_seed + 2)
    sample = np.random.default_rng(config.split_seed).permutation(len(train_ids))[
        :512
    ]  # statistics from a sample
    pixels = (
        np.stack(
            [read_image(files[train_ids[i]], config.image_size, config.channels) for i in sample]
        ).astype(np.float64)
        / 255
    )
    mean = torch.tensor(
        pixels.mean(axis=(0, 2, 3)) if config.normalize else np.zeros(config.channels),
        dtype=torch.float32,
    )
    std = torch.tensor(
        pixels.std(axis=(0, 2, 3)).clip(1e-8) if config.normalize else np.ones(config.channels),
        dtype=torch.float32,
    )

    def loader(ids_labels, train: bool) -> WorkerLoader | None:
        if ids_labels is None:
            return None
        ids, ys = ids_labels
        dataset = FolderImages([files[i] for i in ids], ys, config, mean, std)
        size = config.batch_size if train else config.eval_batch_size
        return WorkerLoader(
            dataset,
            size,
            shuffle=train,
            seed=seed,
            num_workers=config.num_workers,
            transform=build_augment(config.augment) if train else None,
        )

    meta = DataMeta(
        dataset="image_folder",
        input_shape=(config.channels, *config.image_size),
        num_classes=len(classes),
        classes=classes,
        sizes={
            k: len(v[0])
            for k, v in (("train", (train_ids, train_y)), ("val", val), ("test", test))
            if v is not None
        },
        mean=mean.tolist() if config.normalize else None,
        std=std.tolist() if config.normalize else None,
    )
    return DataBundle(
        loader((train_ids, train_y), True), loader(val, False), loader(test, False), meta
    )
