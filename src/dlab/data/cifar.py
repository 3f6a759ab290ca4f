"""CIFAR-10 from its Python pickle batches: an unpacked folder, the official .tar.gz, or a .tar.xz.

Each batch file is checked against its published md5 wherever it is read from, and unpickled with
an arrays-only loader (dlab.data.safe_pickle).
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import numpy as np

from dlab.data.bundle import ArraySplits
from dlab.data.safe_pickle import load_arrays_pickle
from dlab.data.store import RemoteDataset, RemoteFile, data_dir
from dlab.errors import DataError
from dlab.recipe import ImageDataConfig
from dlab.registry import DATASETS

FOLDER = "cifar-10-batches-py"
BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10 = RemoteDataset(
    name="cifar10",
    files=(RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", 170_498_071),),
    mirrors=("https://www.cs.toronto.edu/~kriz",),
)
ARCHIVES = ("cifar-10-python.tar.gz", "cifar-10-python.tar.xz")


def _read_folder(folder: Path) -> dict[str, bytes]:
    found = {}
    for name in BATCH_MD5:
        path = folder / name
        if not path.is_file():
            raise DataError(
                f"{folder}: missing {name} (a cifar-10-batches-py folder holds data_batch_1..5, test_batch, batches.meta)"
            )
        found[name] = path.read_bytes()
    return found


def _read_archive(archive: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = Path(member.name).name
                if (
                    member.isfile()
                    and name in BATCH_MD5
                    and Path(member.name).parent.name == FOLDER
                ):
                    found[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(
            f"{archive}: not a readable tar archive ({exc}); the download may be incomplete"
        ) from None
    missing = sorted(set(BATCH_MD5) - set(found))
    if missing:
        raise DataError(
            f"{archive}: has no {FOLDER}/{missing[0]}; is it the CIFAR-10 python archive?"
        )
    return found


def _locate(folder: Path) -> Path:
    if (folder / FOLDER).is_dir():
        return folder / FOLDER
    for archive in ARCHIVES:
        if (folder / archive).is_file():
            return folder / archive
    raise DataError(
        f"cifar10 is not in {folder} (no {FOLDER}/ folder, {ARCHIVES[0]} or {ARCHIVES[1]}): run "
        f"`dlab data fetch cifar10` to download it, or `dlab data import cifar10 DIR`"
    )


def _found(folder: Path) -> Path | None:
    try:
        return _locate(folder)
    except DataError:
        return None


def read_cifar10(folder: Path, checksums: dict[str, str] = BATCH_MD5) -> ArraySplits:
    """The 50,000 training and 10,000 test images, each batch checked against its md5."""
    source = _locate(folder)
    files = _read_folder(source) if source.is_dir() else _read_archive(source)
    for name, data in files.items():
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if digest != checksums[name]:
            raise DataError(
                f"{source}: {name} has md5 {digest}, published {checksums[name]}; the file is corrupt or not the original"
            )

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        content = load_arrays_pickle(files[name], f"{source}:{name}", encoding="bytes")
        images = np.asarray(content[b"data"], dtype=np.uint8).reshape(
            -1, 3, 32, 32
        )  # R, G, B planes
        return images, np.asarray(content[b"labels"], dtype=np.int64)

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    meta = load_arrays_pickle(files["batches.meta"], f"{source}:batches.meta", encoding="bytes")
    classes = [c.decode() for c in meta[b"label_names"]]
    return ArraySplits(
        train=(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
        test=batch("test_batch"),
        classes=classes,
    )


class Cifar10Config(ImageDataConfig):
    """CIFAR-10: 60,000 colour images 32×32 in 10 classes."""


@DATASETS.register(
    "cifar10",
    size="60,000 images, 163 MB",
    config=Cifar10Config,
    summary="60,000 colour images 32×32, 10 classes (Krizhevsky)",
    remote=CIFAR10,
    splits="50,000 train / 10,000 test",
    source="python pickle batches (folder, .tar.gz or .tar.xz); `dlab data fetch cifar10`",
    available=lambda: _found(data_dir() / "cifar10"),
)
def build_cifar10(config: Cifar10Config, seed: int = 0) -> ArraySplits:
    """CIFAR-10 from $DLAB_DATA_DIR/cifar10."""
    return read_cifar10(data_dir() / "cifar10")
