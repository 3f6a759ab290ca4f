"""What every data set becomes: train/val/test loaders plus the metadata a model and `predict` need."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np
import torch

Batch = tuple[Any, Any]


@dataclass
class DataMeta:
    """What a model needs to know about its data, saved with every run (meta.json).

    `details` holds what only the task needs (vocabulary size and pad id for token tasks,
    horizon and scale for forecasts, ...), typed by the task (`dlab.tasks.<task>.Details`); a
    plain dict given here is checked against that type.
    """

    dataset: str
    task: str = "classification"  # a registered task: `dlab list tasks`
    input_kind: str = "image"  # image | vector | tokens | series | pairs (user, item)
    input_shape: tuple[int, ...] = ()
    num_classes: int | None = None
    classes: list[str] | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    mean: list[float] | None = None  # per-channel statistics of the training split
    std: list[float] | None = None
    details: Any = None

    def __post_init__(self) -> None:
        from dlab.tasks import task_of

        self.details = task_of(self.task).details(self.details)

    @property
    def audio(self) -> Any:
        """How sound clips became frames (`data.audio.AudioFeatures`), or None for other data."""
        return getattr(self.details, "audio", None)

    def to_json(self) -> dict[str, Any]:
        """Plain data for meta.json."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["input_shape"] = list(self.input_shape)
        data["details"] = self.details.model_dump(mode="json", exclude_none=True)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataMeta:
        """Inverse of to_json; also reads meta.json written before the details were typed."""
        data = dict(data)
        data["input_shape"] = tuple(data.get("input_shape", ()))
        if "extra" in data:  # before 2026-12: an untyped dict of the same fields
            data["details"] = data.pop("extra")
        return cls(**data)


class Loader(Protocol):
    """An epoch-indexed source of batches whose order depends only on (seed, epoch)."""

    batch_size: int

    def __len__(self) -> int: ...

    @property
    def num_samples(self) -> int: ...

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]: ...

    def sample_batch(self) -> Batch: ...

    def to(self, device: torch.device) -> Loader: ...


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A torch generator for the data order of one epoch, a function of (seed, epoch) only."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class TensorLoader:
    """Batches of in-memory tensors, gathered by index permutation: no workers, no collation.

    Holding the data as tensors (on the GPU when training there) and slicing a permutation is
    the fast path for every data set that fits in memory.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        self.inputs, self.targets = inputs, targets
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.transform = drop_last, transform

    @property
    def num_samples(self) -> int:
        """Samples per epoch before dropping a last partial batch."""
        return len(self.inputs)

    def __len__(self) -> int:
        full, rest = divmod(len(self.inputs), self.batch_size)
        return full if (self.drop_last or rest == 0) else full + 1

    def to(self, device: torch.device) -> TensorLoader:
        """Move the data to `device` once, so batches never cross the bus."""
        self.inputs, self.targets = self.inputs.to(device), self.targets.to(device)
        return self

    def order(self, epoch: int) -> torch.Tensor:
        """The sample order of `epoch`."""
        if not self.shuffle:
            return torch.arange(len(self.inputs))
        return torch.randperm(len(self.inputs), generator=epoch_generator(self.seed, epoch))

    def sample_batch(self) -> Batch:
        """The first batch_size samples, without augmentation or shuffling (draws no random numbers)."""
        return self.inputs[: self.batch_size], self.targets[: self.batch_size]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches of `epoch`, skipping the first `start` (for resuming mid-epoch)."""
        inputs, targets, transform, size = (
            self.inputs,
            self.targets,
            self.transform,
            self.batch_size,
        )
        end = len(self) * size  # drop_last stops at the last full batch
        if not self.shuffle:
            for lo in range(start * size, min(end, len(inputs)), size):
                x = inputs[lo : lo + size]
                yield (transform(x) if transform else x), targets[lo : lo + size]
            return
        order = self.order(epoch).to(inputs.device)[start * size : end]
        if not len(order):  # resumed at the epoch's end (an empty tensor splits into one)
            return
        for index in order.split(size):  # every batch's indices, in one op
            x = inputs[index]
            yield (transform(x) if transform else x), targets[index]


@dataclass
class DataBundle:
    """Train/val/test loaders, their metadata, and the tokenizer of text data."""

    train: Loader
    val: Loader | None
    test: Loader | None
    meta: DataMeta
    tokenizer: Any = None  # dlab.data.tokenizers.Tokenizer for text; saved with the run
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. raw reference texts for BLEU
    # files saved with a run: name -> writer(path) (what a recommender's users already rated)
    files: dict[str, Callable[[Any], None]] = field(default_factory=dict)

    def loader(self, split: str) -> Loader:
        """The loader of `split`, or a DataError if this data set has no such split."""
        from dlab.errors import DataError

        found = {"train": self.train, "val": self.val, "test": self.test}.get(split)
        if found is None:
            raise DataError(f"{self.meta.dataset} has no '{split}' split")
        return found


@dataclass
class ArraySplits:
    """Raw arrays of a classification data set, before splitting off validation and normalising.

    Images are uint8, shaped (N, H, W) or (N, C, H, W); vectors are float, shaped (N, D).
    """

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray] | None = None
    val: tuple[np.ndarray, np.ndarray] | None = None  # an official validation split, if any
    classes: list[str] | None = None
    input_kind: str = "image"
    details: dict[str, Any] = field(default_factory=dict)  # the classification task's Details


def split_off(x: np.ndarray, y: np.ndarray, size: float, seed: int, stratify: bool = True):
    """Split (x, y) into (rest, held-out) with `size` a fraction (<1) or a count, per class if stratified."""
    n = len(x)
    count = round(size * n) if size < 1 else int(size)
    if count <= 0:
        return (x, y), None
    if count >= n:
        from dlab.errors import DataError

        raise DataError(f"data.val_size: {size} would leave no training data (only {n} samples)")
    rng = np.random.default_rng(seed)
    if stratify:
        held = []
        classes, counts = np.unique(y, return_counts=True)
        quota = np.floor(counts * count / n).astype(int)
        quota[np.argsort(-(counts * count / n - quota))[: count - quota.sum()]] += (
            1  # largest remainders
        )
        for cls, k in zip(classes, quota, strict=True):
            members = np.flatnonzero(y == cls)
            held.append(rng.permutation(members)[:k])
        held_index = np.sort(np.concatenate(held))
    else:
        held_index = np.sort(rng.permutation(n)[:count])
    mask = np.ones(n, dtype=bool)
    mask[held_index] = False
    return (x[mask], y[mask]), (x[held_index], y[held_index])


def _as_float_images(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim == 3:
        t = t.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    return t.float().div_(255.0) if x.dtype == np.uint8 else t.float()


def subsample(x: np.ndarray, y: np.ndarray, limit: int | None, seed: int, stratify: bool = True):
    """Keep `limit` samples, drawn class-balanced (largest remainders) and in their original order."""
    if limit is None or limit >= len(x):
        return x, y
    return split_off(x, y, limit, seed, stratify)[1]


def finish(splits: ArraySplits, config: Any, dataset: str, seed: int) -> DataBundle:
    """Split off validation, subsample, normalise with training statistics, and wrap in loaders."""
    train, val = splits.train, splits.val
    if val is None:
        train, val = split_off(*train, config.val_size, config.split_seed)
    train = subsample(*train, config.limit, config.split_seed + 2)
    convert = (
        _as_float_images
        if splits.input_kind == "image"
        else (lambda a: torch.as_tensor(a, dtype=torch.float32))
    )
    tensors = {
        name: (convert(pair[0]), torch.as_tensor(pair[1], dtype=torch.long))
        for name, pair in (("train", train), ("val", val), ("test", splits.test))
        if pair is not None
    }
    x_train = tensors["train"][0]
    details = dict(splits.details)
    if splits.input_kind == "image" and x_train.shape[1] == 1:
        # lets predict invert a dark-on-light drawing
        details["dark_background"] = _dark_background(x_train)
    mean = std = None
    if config.normalize:
        mean, std = _normalise(tensors, image=splits.input_kind == "image")
    classes = splits.classes or [
        str(c) for c in range(int(max(int(t[1].max()) for t in tensors.values())) + 1)
    ]
    meta = DataMeta(
        dataset=dataset,
        input_kind=splits.input_kind,
        input_shape=tuple(x_train.shape[1:]),
        num_classes=len(classes),
        classes=classes,
        sizes={name: len(pair[1]) for name, pair in tensors.items()},
        mean=mean,
        std=std,
        details=details,
    )
    from dlab.data.augment import build_augment

    augment = build_augment(getattr(config, "augment", None))
    if augment is not None and splits.input_kind != "image":
        from dlab.errors import RecipeError

        raise RecipeError(f"data.augment: {dataset} is not an image data set")

    loaders = [
        _loader(tensors[name], config, seed, name == "train", augment) if name in tensors else None
        for name in ("train", "val", "test")
    ]
    return DataBundle(*loaders, meta)


def _dark_background(images: torch.Tensor) -> bool:
    """Do single-channel images draw light strokes on a dark border (MNIST), or dark on light?"""
    border = torch.cat(
        [images[:, 0, 0], images[:, 0, -1], images[:, 0, :, 0], images[:, 0, :, -1]], dim=1
    )
    return bool(border.mean() < 0.5)


def _normalise(
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]], image: bool
) -> tuple[list[float], list[float]]:
    """Standardise every split in place with the training split's mean and std (per channel
    for images, per feature otherwise); return them."""
    x_train = tensors["train"][0]
    dims = [0, *range(2, x_train.ndim)] if image else [0]
    mean = x_train.mean(dim=dims, dtype=torch.float64)
    std = x_train.std(dim=dims).to(torch.float64).clamp_min(1e-8)
    shape = (1, -1) + (1,) * (x_train.ndim - 2)
    for name, (x, y) in tensors.items():
        tensors[name] = ((x - mean.view(shape).float()) / std.view(shape).float(), y)
    return mean.tolist(), std.tolist()


def _loader(
    pair: tuple[torch.Tensor, torch.Tensor], config: Any, seed: int, train: bool, augment: Any
) -> Loader:
    """In-memory batches, or worker processes (data.loader: workers); augmented in training."""
    x, y = pair
    size = config.batch_size if train else config.eval_batch_size
    transform = augment if train else None
    if config.loader == "workers":
        from dlab.data.workers import TensorPairs, WorkerLoader

        return WorkerLoader(
            TensorPairs(x, y),
            size,
            shuffle=train,
            seed=seed,
            num_workers=config.num_workers,
            transform=transform,
        )
    return TensorLoader(x, y, size, shuffle=train, seed=seed, transform=transform)
