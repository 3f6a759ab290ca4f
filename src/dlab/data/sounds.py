"""Sound data sets from WAV files: a user's own sounds (`audio_folder`, one sub-folder per class)
and FSDD's recordings (`fsdd_wav`, split by speaker so the test speaker is never heard in
training). dlab computes the features (`data.audio`) and saves their settings with the run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from dlab.data.audio import AudioFeatures, features, read_wav
from dlab.data.bundle import DataBundle, split_off, subsample
from dlab.data.fsdd_files import FSDD_WAV, import_recordings, present, recordings_dir
from dlab.data.speech import DIGITS, ConnectedConfig, clips_bundle, connected_bundle
from dlab.errors import DataError
from dlab.recipe import DataConfig, SoundAugmentConfig
from dlab.registry import DATASETS

FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")  # digit_speaker_index.wav


class AudioDataConfig(DataConfig):
    """Clips as feature frames: how they are computed and how many frames a clip keeps."""

    path: str = Field(description="the folder of WAV files")
    features: AudioFeatures = Field(
        default_factory=AudioFeatures, description="log-mel or MFCC settings"
    )
    frames: int = Field(
        100,
        ge=4,
        le=10_000,
        description="frames per clip: shorter ones padded in front, "
        "longer ones keep their last frames (100 frames = 1 s at a 10 ms hop)",
    )
    test_size: float = Field(0.2, gt=0, lt=1, description="fraction held out for testing")
    augment: SoundAugmentConfig | None = Field(
        None, description="training-time augmentation: shift, noise, SpecAugment masks"
    )


class FsddWavConfig(AudioDataConfig):
    """FSDD's recordings folder (`digit_speaker_index.wav`), split by speaker or as published."""

    path: str | None = Field(
        None,
        description="a folder of FSDD recordings; default: the release `dlab data fetch "
        "fsdd_wav` downloaded (or `dlab data import fsdd_wav DIR` copied)",
    )
    split: Literal["speaker", "official"] = Field(
        "speaker",
        description="speaker: test speakers never heard in training; official: FSDD's own test "
        "set, recordings 0-4 of every speaker and digit",
    )
    test_speakers: list[str] = Field(
        default_factory=list,
        description="speakers held out for testing (default: the last one alphabetically)",
    )


def _clip_frames(paths: list[Path], config: AudioDataConfig) -> list[np.ndarray]:
    if not paths:
        raise DataError(f"{config.path}: no .wav files found")
    return [features(read_wav(p, config.features.rate), config.features).numpy() for p in paths]


def _audio(config: AudioDataConfig) -> dict:
    """The details every sound data set saves: how its clips became frames."""
    return {"audio": config.features}


def _train_val(
    index: np.ndarray, labels: np.ndarray, config: AudioDataConfig
) -> dict[str, np.ndarray]:
    (train, train_y), held = split_off(index, labels[index], config.val_size, config.split_seed)
    if config.limit is not None:
        train = subsample(train, train_y, config.limit, config.split_seed + 2)[0]
    return {"train": train, **({"val": held[0]} if held is not None else {})}


@DATASETS.register(
    "audio_folder",
    config=AudioDataConfig,
    summary="your own sounds: one sub-folder of WAV files per class",
    size="as many clips as the folder holds",
    splits="stratified test / val / train (fixed by data.split_seed)",
)
def build_audio_folder(config: AudioDataConfig, seed: int = 0) -> DataBundle:
    root = Path(config.path)
    if not root.is_dir():
        raise DataError(f"data.path: {root} is not a folder (one sub-folder of .wav per class)")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("*.wav")))
    if len(classes) < 2:
        raise DataError(f"data.path: {root} needs at least two sub-folders holding .wav files")
    paths, labels = [], []
    for label, name in enumerate(classes):
        found = sorted((root / name).glob("*.wav"))
        paths += found
        labels += [label] * len(found)
    clips, y = _clip_frames(paths, config), np.asarray(labels, dtype=np.int64)
    index = np.arange(len(clips))
    (rest, _), held = split_off(index, y, config.test_size, config.split_seed + 1)
    splits = {**_train_val(rest, y, config), "test": held[0] if held is not None else rest[:0]}
    return clips_bundle(root.name, clips, y, splits, classes, config, seed, _audio(config))


@DATASETS.register(
    "fsdd_wav",
    config=FsddWavConfig,
    summary="FSDD's WAV recordings (digit_speaker_index.wav), a speaker held out for testing",
    size="3,000+ clips at 8 kHz",
    splits="test: held-out speakers; val: stratified from the others",
    source="github.com/Jakobovski/free-spoken-digit-dataset (recordings/)",
    remote=FSDD_WAV,
    importer=import_recordings,
    available=present,
)
def build_fsdd_wav(config: FsddWavConfig, seed: int = 0) -> DataBundle:
    clips, y, splits = fsdd_recordings(config)
    return clips_bundle("fsdd_wav", clips, y, splits, DIGITS, config, seed, _audio(config))


def fsdd_recordings(config: FsddWavConfig) -> tuple[list[np.ndarray], np.ndarray, dict]:
    """FSDD's recordings as feature frames, their digits, and the train/val/test indices:
    held-out speakers, or the official split (recordings 0-4 of each speaker and digit)."""
    root = Path(config.path) if config.path else recordings_dir()
    if not root.is_dir():
        raise DataError(f"data.path: {root} is not a folder of FSDD recordings")
    named = [(p, FSDD_NAME.match(p.name)) for p in sorted(root.glob("*.wav"))]
    unnamed = [p.name for p, m in named if m is None]
    if unnamed:
        raise DataError(
            f"data.path: {unnamed[0]} is not named digit_speaker_index.wav "
            f"({len(unnamed)} such files in {root})"
        )
    speakers = np.asarray([m.group(2) for _, m in named])
    y = np.asarray([int(m.group(1)) for _, m in named], dtype=np.int64)
    if config.split == "official":  # the README's test set: indices 0-4
        testing = np.asarray([int(m.group(3)) < 5 for _, m in named])
    else:
        testing = np.isin(speakers, _test_speakers(config, speakers))
    clips, index = _clip_frames([p for p, _ in named], config), np.arange(len(named))
    return clips, y, {**_train_val(index[~testing], y, config), "test": index[testing]}


def _test_speakers(config: FsddWavConfig, speakers: np.ndarray) -> list[str]:
    held = config.test_speakers or sorted(set(speakers))[-1:]
    unknown = sorted(set(held) - set(speakers))
    if unknown:
        raise DataError(
            f"data.test_speakers: no recordings by {unknown[0]!r}; the speakers are "
            f"{', '.join(sorted(set(speakers)))}"
        )
    if set(held) >= set(speakers):
        raise DataError("data.test_speakers: every speaker is held out; none is left to train on")
    return held


class FsddWavConnectedConfig(ConnectedConfig, FsddWavConfig):
    """Connected digits built from FSDD's recordings, with features dlab computes (so a WAV
    utterance can be transcribed); a test speaker is never heard in training."""

    frames: int = Field(
        1200, ge=16, le=20_000, description="utterances are padded at the end to this many frames"
    )


@DATASETS.register(
    "fsdd_wav_connected",
    config=FsddWavConnectedConfig,
    summary="connected digits from FSDD's WAV recordings, for CTC models that hear WAV files",
    size="4,000 train utterances by default, built on the fly",
    splits="utterances of train / val / test clips only (test: held-out speakers)",
    source="github.com/Jakobovski/free-spoken-digit-dataset (recordings/)",
    remote=FSDD_WAV,
    importer=import_recordings,
    available=present,
)
def build_fsdd_wav_connected(config: FsddWavConnectedConfig, seed: int = 0) -> DataBundle:
    clips, y, splits = fsdd_recordings(config)
    return connected_bundle("fsdd_wav_connected", clips, y, splits, config, seed, _audio(config))
