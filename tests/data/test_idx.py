"""The idx reader refuses anything that is not a complete, well-formed idx file."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

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


def _idx(tmp_path, raw: bytes, name: str = "f-idx") -> Path:
    path = tmp_path / name
    path.write_bytes(raw)
    return path


# (bytes of the file, expected magic, the whole message after "<path>: ")
BROKEN = {
    "four bytes, no dimensions": (
        b"\0\0\x08\x01",
        None,
        "truncated inside the header (4 bytes, header needs 8)",
    ),
    "three bytes": (
        b"\0\0\x08",
        None,
        "only 3 bytes; an idx file starts with a 4-byte magic number",
    ),
    "first byte not zero": (
        b"\x01\0\x08\x01" + b"\0\0\0\x01" + b"\x07",
        None,
        "magic number 16779265 is not an idx header (expected 2049 or 2051)",
    ),
    "second byte not zero": (
        b"\0\x01\x08\x01" + b"\0\0\0\x01" + b"\x07",
        LABELS_MAGIC,
        "magic number 67585 is not an idx header (expected 2049)",
    ),
    "a high first byte": (
        b"\xff\0\x08\x01" + b"\0\0\0\x01" + b"\x07",
        None,
        "magic number -16775167 is not an idx header (expected 2049 or 2051)",
    ),
    "unknown element type": (
        b"\0\0\x07\x01" + b"\0\0\0\x01" + b"\x07",
        None,
        "magic number 1793 is not an idx header (expected 2049 or 2051)",
    ),
    "no dimensions": (
        b"\0\0\x08\x00",
        None,
        "magic number 2048 is not an idx header (expected 2049 or 2051)",
    ),
    "labels where images are expected": (
        b"\0\0\x08\x01" + b"\0\0\0\x01" + b"\x07",
        IMAGES_MAGIC,
        "magic number 2049, expected 2051 (an idx3 image file)",
    ),
    "images where labels are expected": (
        b"\0\0\x08\x03" + b"\0\0\0\x01" * 3 + b"\x07",
        LABELS_MAGIC,
        "magic number 2051, expected 2049 (an idx1 label file)",
    ),
    "another idx kind than expected": (
        b"\0\0\x08\x02" + b"\0\0\0\x01" * 2 + b"\x07",
        2051 - 1 + 0x100,  # an idx2 file of signed bytes
        "magic number 2050, expected 2306 (idx)",
    ),
    "a negative dimension": (
        b"\0\0\x08\x02" + b"\0\0\0\x02" + b"\xff\xff\xff\xfe",
        None,
        "negative dimension in the header [2, -2]",
    ),
    "one byte short": (
        b"\0\0\x08\x02" + b"\0\0\0\x02" * 2 + b"\0" * 3,
        None,
        "truncated: header says 2×2 = 4 bytes of data, found 3",
    ),
    "one byte over": (
        b"\0\0\x08\x02" + b"\0\0\0\x02" * 2 + b"\0" * 5,
        None,
        "longer than its header says: header says 2×2 = 4 bytes of data, found 5",
    ),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_each_broken_header_gets_its_own_message(tmp_path, case):
    raw, magic, message = BROKEN[case]
    path = _idx(tmp_path, raw)
    with pytest.raises(DataError) as info:
        read_idx(path, magic)
    assert str(info.value) == f"{path}: {message}"


def test_an_empty_idx_file_is_an_empty_array(tmp_path):
    labels = read_idx(_idx(tmp_path, b"\0\0\x08\x01" + b"\0\0\0\0"), LABELS_MAGIC)
    assert labels.shape == (0,) and labels.dtype == np.uint8


def test_wider_element_types_come_back_in_native_byte_order(tmp_path):
    values = np.array([[1, -2, 300], [70000, -1, 0]], dtype=">i4")
    raw = b"\0\0\x0c\x02" + b"\0\0\0\x02" + b"\0\0\0\x03" + values.tobytes()
    got = read_idx(_idx(tmp_path, raw))
    assert got.dtype == np.dtype("int32") and got.dtype.isnative
    np.testing.assert_array_equal(got, values)
    doubles = np.array([0.5, -1e300], dtype=">f8")
    got = read_idx(_idx(tmp_path, b"\0\0\x0e\x01\0\0\0\x02" + doubles.tobytes(), "d-idx"))
    assert got.dtype == np.float64 and got.tolist() == [0.5, -1e300]


def test_write_idx_stores_bytes_and_reproducible_gzip(tmp_path, monkeypatch):
    path = tmp_path / "labels-idx1-ubyte.gz"
    write_idx(path, np.array([1, 2, 255], dtype=np.int64))  # any integer array, stored as bytes
    assert gzip.decompress(path.read_bytes()) == b"\0\0\x08\x01\0\0\0\x03\x01\x02\xff"
    first = path.read_bytes()
    assert first[4:8] == b"\0\0\0\0"  # no timestamp in the gzip header
    monkeypatch.setattr("time.time", lambda: 1.7e9)  # a later clock writes the same bytes
    write_idx(path, np.array([1, 2, 255]))
    assert path.read_bytes() == first


def test_a_zlib_stream_named_gz_is_not_gzip(tmp_path):
    path = _idx(tmp_path, zlib.compress(b"\0\0\x08\x01\0\0\0\x01\x07"), "labels.gz")
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(info.value).startswith(f"{path}: not a complete gzip file (")


def test_a_cut_gzip_stream_says_it_ends_early(tmp_path):
    whole = gzip.compress(b"\0\0\x08\x01\0\0\0\x04" + bytes(range(4)) * 200)
    path = _idx(tmp_path, whole[:-12], "labels.gz")  # the data without the gzip trailer
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(info.value) == (
        f"{path}: not a complete gzip file (the compressed stream ends early); "
        "the download was probably cut short"
    )


def test_a_gzip_bomb_stops_at_the_limit_without_inflating_it(tmp_path, monkeypatch):
    import tracemalloc

    from dlab.data import idx

    monkeypatch.setattr(idx, "MAX_BYTES", 1 << 20)
    header = b"\0\0\x08\x01" + (1 << 20).to_bytes(4, "big")  # 8 bytes of header, 1 MiB of data
    exactly = _idx(tmp_path, gzip.compress(header + bytes((1 << 20) - 8)), "exact.gz")
    with pytest.raises(DataError, match="truncated"):  # inflated whole (1 MiB): then checked
        read_idx(exactly)
    bomb = _idx(tmp_path, gzip.compress(bytes(1 << 20) + bytes(40 << 20)), "bomb.gz")
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as info:
            read_idx(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(info.value) == f"{bomb}: inflates to more than 1,048,576 bytes; not an idx file"
    assert peak < 8 << 20  # 41 MiB of zeros were never inflated
    one_over = _idx(tmp_path, gzip.compress(bytes((1 << 20) + 1)), "over.gz")
    with pytest.raises(DataError, match="inflates to more than"):
        read_idx(one_over)
