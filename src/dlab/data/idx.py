"""The idx format of MNIST and Fashion-MNIST: a magic number, big-endian dimensions, raw bytes."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from dlab.errors import DataError

# Third byte of the magic number -> numpy dtype (big-endian where it matters).
_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IMAGES_MAGIC = 2051  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # unsigned bytes, 1 dimension


def read_idx(path: str | Path, expect_magic: int | None = None) -> np.ndarray:
    """Read a (gzipped) idx file, checking its magic number and that its size matches the header."""
    path = Path(path)
    try:
        raw = _gunzip(path.read_bytes(), path) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(
            f"{path}: not a complete gzip file ({exc}); the download was probably cut short"
        ) from None
    if len(raw) < 4:
        raise DataError(
            f"{path}: only {len(raw)} bytes; an idx file starts with a 4-byte magic number"
        )
    (magic,) = struct.unpack(">i", raw[:4])
    zero, dtype_code, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or dtype_code not in _DTYPES or ndim == 0:
        raise DataError(
            f"{path}: magic number {magic} is not an idx header (expected {expect_magic or '2049 or 2051'})"
        )
    if expect_magic is not None and magic != expect_magic:
        raise DataError(
            f"{path}: magic number {magic}, expected {expect_magic} ({_describe_magic(expect_magic)})"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"{path}: truncated inside the header ({len(raw)} bytes, header needs {header})"
        )
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    if min(dims) < 0:
        raise DataError(f"{path}: negative dimension in the header {list(dims)}")
    dtype = _DTYPES[dtype_code]
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    payload = len(raw) - header
    if payload != expected:
        shape = "×".join(map(str, dims))
        state = "truncated" if payload < expected else "longer than its header says"
        raise DataError(
            f"{path}: {state}: header says {shape} = {expected} bytes of data, found {payload}"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
    )


MAX_BYTES = 1 << 30  # the largest idx file dlab inflates (MNIST's largest: 47 MB)


def _gunzip(data: bytes, path: Path) -> bytes:
    """Inflate gzip `data`, refusing to grow past MAX_BYTES (a gzip bomb stops there)."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    out = inflater.decompress(data, MAX_BYTES + 1)
    if len(out) > MAX_BYTES:
        raise DataError(f"{path}: inflates to more than {MAX_BYTES:,} bytes; not an idx file")
    if not inflater.eof:
        raise EOFError("the compressed stream ends early")
    return out


def _describe_magic(magic: int) -> str:
    return {IMAGES_MAGIC: "an idx3 image file", LABELS_MAGIC: "an idx1 label file"}.get(
        magic, "idx"
    )


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an idx file (gzipped if the name ends in .gz); used by tests and tools."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}i", *array.shape
    )
    data += array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
