"""The idx reader refuses anything that is not a complete, well-formed idx file."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from dlab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx, write_idx
from dlab.errors import DataError


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_round_trip(tmp_path, suffix):
    images = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    path = tmp_path / f"images-idx3-ubyte{suffix}"
    write_idx(path, images)
    np.testing.assert_array_equal(read_idx(path, IMAGES_MAGIC), images)


def test_wrong_magic(tmp_path):
    path = tmp_path / "labels-idx1-ubyte.gz"
    write_idx(path, np.arange(10, dtype=np.uint8))
    with pytest.raises(DataError, match=r"magic number 2049, expected 2051 \(an idx3 image file\)"):
        read_idx(path, IMAGES_MAGIC)


def test_not_an_idx_header(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"PK\x03\x04 this is a zip file really"))
    with pytest.raises(DataError, match="is not an idx header"):
        read_idx(path, LABELS_MAGIC)


def test_truncated_payload(tmp_path):
    path = tmp_path / "images-idx3-ubyte"
    write_idx(path, np.zeros((5, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(
        DataError, match=r"truncated: header says 5×28×28 = 3920 bytes of data, found 3820"
    ):
        read_idx(path, IMAGES_MAGIC)


def test_extra_bytes(tmp_path):
    path = tmp_path / "images-idx3-ubyte"
    write_idx(path, np.zeros((2, 4, 4), dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DataError, match="longer than its header says"):
        read_idx(path, IMAGES_MAGIC)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "images-idx3-ubyte.gz"
    write_idx(path, np.random.default_rng(1).integers(0, 256, size=(50, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="not a complete gzip file"):
        read_idx(path, IMAGES_MAGIC)


def test_tiny_and_missing_files(tmp_path):
    path = tmp_path / "tiny"
    path.write_bytes(b"\0\0")
    with pytest.raises(DataError, match="only 2 bytes"):
        read_idx(path)
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "absent.gz")
