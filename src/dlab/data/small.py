"""Small data sets that ship inside Python packages: scikit-learn's digits and MNIST-1D."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from dlab.data.bundle import ArraySplits, split_off
from dlab.data.safe_pickle import load_arrays_pickle
from dlab.data.store import RemoteDataset, RemoteFile, data_dir
from dlab.errors import DataError
from dlab.extras import install_line
from dlab.recipe import DataConfig, ImageDataConfig
from dlab.registry import DATASETS

DIGITS = [str(d) for d in range(10)]


class DigitsConfig(ImageDataConfig):
    """scikit-learn's 1,797 handwritten digits, 8×8, 17 grey levels."""

    test_size: float = Field(
        0.2, gt=0, lt=1, description="fraction held out as the test split (stratified, fixed)"
    )


@DATASETS.register(
    "digits",
    size="1,797 images",
    config=DigitsConfig,
    summary="1,797 handwritten digits, 8×8 (UCI, via scikit-learn): works offline",
    packaged="sklearn",
    splits="1,294 train / 144 val / 359 test (stratified, fixed)",
    source="sklearn.datasets.load_digits()",
)
def build_digits(config: DigitsConfig, seed: int = 0) -> ArraySplits:
    """The digits as float images in [0, 1] (the originals count 0..16 ink per cell)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # (1797, 8, 8)
    rest, test = split_off(
        images[:, None], bunch.target.astype(np.int64), config.test_size, config.split_seed + 1
    )
    return ArraySplits(train=rest, test=test, classes=DIGITS)


MNIST1D = RemoteDataset(
    name="mnist1d",
    files=(RemoteFile("mnist1d_data.pkl", "5bf44b67062b653caea0043bc236811a", 1_642_012),),
    mirrors=("https://github.com/greydanus/mnist1d/raw/master",),
)


class Mnist1dConfig(DataConfig):
    """MNIST-1D (Greydanus): 40-sample 1-D signals of the ten digits, shifted, scaled and noised."""

    source: Literal["auto", "pickle", "package"] = Field(
        "auto",
        description="auto: the official pickle if present, else build it with the mnist1d package",
    )


def _from_package() -> dict:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError(
            "mnist1d: neither $DLAB_DATA_DIR/mnist1d/mnist1d_data.pkl nor the mnist1d package is available: "
            f"{install_line('data')}, or `dlab data fetch mnist1d`"
        ) from None
    return make_dataset(get_dataset_args())


@DATASETS.register(
    "mnist1d",
    size="5,000 signals, 1.6 MB",
    config=Mnist1dConfig,
    summary="MNIST-1D: 40-sample 1-D digit signals; separates MLPs (68%) from CNNs (94%)",
    remote=MNIST1D,
    packaged="mnist1d",
    splits="3,600 train / 400 val / 1,000 test",
    source="official pickle, or built offline by the mnist1d package",
)
def build_mnist1d(config: Mnist1dConfig, seed: int = 0) -> ArraySplits:
    """MNIST-1D signals as vectors of 40 floats."""
    path = data_dir() / "mnist1d" / MNIST1D.files[0].name
    if config.source == "pickle" or (config.source == "auto" and path.is_file()):
        if not path.is_file():
            MNIST1D.require()
        content = load_arrays_pickle(path)
    else:
        content = _from_package()
    x, y = np.asarray(content["x"], dtype=np.float32), np.asarray(content["y"], dtype=np.int64)
    x_test, y_test = (
        np.asarray(content["x_test"], dtype=np.float32),
        np.asarray(content["y_test"], dtype=np.int64),
    )
    return ArraySplits(train=(x, y), test=(x_test, y_test), classes=DIGITS, input_kind="vector")
