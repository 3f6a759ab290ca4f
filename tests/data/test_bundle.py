"""In-memory loaders, deterministic splits and normalisation with training statistics only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlab.data.bundle import ArraySplits, TensorLoader, finish, split_off
from dlab.errors import DataError
from dlab.recipe import from_dict


def loader(n=103, batch=10, seed=0, shuffle=True):
    return TensorLoader(
        torch.arange(n).float().unsqueeze(1), torch.arange(n), batch, shuffle=shuffle, seed=seed
    )


def targets(batches):
    return [b[1].tolist() for b in batches]


def test_order_is_a_function_of_seed_and_epoch():
    a, b = loader(seed=1), loader(seed=1)
    assert targets(a.epoch(3)) == targets(b.epoch(3))
    assert targets(a.epoch(3)) != targets(a.epoch(4))
    assert targets(a.epoch(3)) != targets(loader(seed=2).epoch(3))
    every = sorted(t for batch in targets(a.epoch(5)) for t in batch)
    assert every == list(range(103))


def test_resuming_mid_epoch_yields_the_rest_of_the_same_epoch():
    data = loader()
    assert targets(data.epoch(2, start=4)) == targets(data.epoch(2))[4:]
    for shuffle in (True, False):  # resumed at the epoch's end: nothing, not an empty batch
        done = loader(shuffle=shuffle)
        assert targets(done.epoch(2, start=len(done))) == []
        dropped = TensorLoader(torch.zeros(103, 1), torch.zeros(103), 10, shuffle, drop_last=True)
        assert [len(t) for t in targets(dropped.epoch(1))] == [10] * 10
        assert targets(dropped.epoch(1, start=10)) == []


def test_lengths_and_last_batch():
    assert len(loader(103, 10)) == 11
    assert len(TensorLoader(torch.zeros(103, 1), torch.zeros(103), 10, drop_last=True)) == 10
    assert len(loader(100, 10)) == 10
    assert [len(t) for t in targets(loader(103, 10, shuffle=False).epoch(0))][-1] == 3


def test_loading_draws_no_global_random_numbers():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    list(loader().epoch(7))
    loader().sample_batch()
    assert torch.equal(torch.rand(3), expected)


def test_stratified_split_is_exact_and_deterministic():
    y = np.repeat(np.arange(4), [50, 30, 15, 5])
    x = np.arange(len(y))
    (rest_x, _), (held_x, held_y) = split_off(x, y, 0.2, seed=0)
    assert np.bincount(held_y).tolist() == [10, 6, 3, 1]
    assert sorted(np.concatenate([rest_x, held_x]).tolist()) == x.tolist()
    again = split_off(x, y, 20, seed=0)[1]
    assert np.array_equal(again[0], held_x)
    with pytest.raises(DataError, match="would leave no training data"):
        split_off(x, y, 100, seed=0)


def test_normalisation_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 100, size=(200, 8, 8), dtype=np.uint8)
    test = np.full((50, 8, 8), 255, dtype=np.uint8)  # very different: must not move the statistics
    splits = ArraySplits(
        train=(train, rng.integers(0, 2, 200)), test=(test, np.zeros(50, dtype=np.int64))
    )
    config = from_dict(
        {"data": {"name": "mnist_sample", "val_size": 0}, "model": {"name": "mlp"}}
    ).data
    bundle = finish(splits, config, "toy", seed=0)
    expected_mean = train.astype(np.float64).mean() / 255
    assert bundle.meta.mean[0] == pytest.approx(expected_mean, rel=1e-6)
    assert float(bundle.train.inputs.mean()) == pytest.approx(0.0, abs=1e-5)
    assert (
        float(bundle.test.inputs.mean()) > 3
    )  # the test split is standardised with train statistics
    assert bundle.val is None and bundle.meta.sizes == {"train": 200, "test": 50}
    assert bundle.meta.details.dark_background is True
