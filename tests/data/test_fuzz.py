"""The readers of untrusted bytes, fuzzed with Hypothesis: any input gives dlab's one-line user
error or a valid result, never another exception, never unbounded memory."""

from __future__ import annotations

import gzip
import io
import struct
import wave

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dlab.data.audio import read_wav
from dlab.data.bundle import DataMeta
from dlab.data.idx import read_idx
from dlab.data.inputs import from_image_bytes
from dlab.data.safe_pickle import load_arrays_pickle
from dlab.errors import DataError, InputError

# derandomized: the same 300 cases on every machine (run with --hypothesis-seed to explore)
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def idx_header(dims: list[int], dtype_code: int = 0x08) -> bytes:
    return bytes([0, 0, dtype_code, len(dims)]) + struct.pack(f">{len(dims)}i", *dims)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=64),
        st.builds(  # a plausible header with arbitrary (negative, huge) dimensions
            lambda dims, body: idx_header(dims) + body,
            st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=4),
            st.binary(max_size=64),
        ),
    )
)
@example(idx_header([-1, -4]) + bytes(4))  # negative dimensions whose product fits the data
@example(idx_header([2**16, 2**16, 2**16, 2**16]))  # a product that overflows 64 bits
def test_idx_bytes_give_an_array_or_a_data_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("idx") / "f.idx"
    path.write_bytes(data)
    try:
        array = read_idx(path)
    except DataError as exc:
        assert "\n" not in str(exc)
    else:
        assert array.size * array.itemsize == len(data) - 4 - 4 * data[3]


def test_a_gzip_bomb_is_refused_without_inflating_it(tmp_path, monkeypatch):
    from dlab.data import idx

    monkeypatch.setattr(idx, "MAX_BYTES", 1_000_000)  # the real limit is 1 GiB
    path = tmp_path / "bomb.idx.gz"
    path.write_bytes(gzip.compress(idx_header([4_000_000]) + bytes(4_000_000)))
    with pytest.raises(DataError, match="inflates to more than 1,000,000 bytes"):
        read_idx(path)


@FUZZ
@given(st.binary(max_size=200))
@example(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93.")
def test_pickle_bytes_give_arrays_or_a_data_error(data):
    try:
        load_arrays_pickle(data, "fuzz.pkl")
    except DataError as exc:
        assert str(exc).startswith("fuzz.pkl: ")


def _wav(channels: int, width: int, rate: int, frames: bytes) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as clip:
        clip.setnchannels(channels)
        clip.setsampwidth(width)
        clip.setframerate(rate)
        clip.writeframes(frames)
    return buffer.getvalue()


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda c, w, r, f, cut: _wav(c, w, r, f)[: cut or None],
            st.integers(1, 3),
            st.integers(1, 4),
            st.integers(1, 200_000),
            st.binary(max_size=400),
            st.integers(0, 100),
        ),
    )
)
def test_wav_bytes_give_samples_or_an_input_error(data):
    try:
        samples = read_wav(data, 8000, "fuzz.wav")
    except InputError as exc:
        assert str(exc).startswith("fuzz.wav: ") and "\n" not in str(exc)
    else:
        assert samples.dtype == np.float32 and np.isfinite(samples).all()


IMAGE_META = DataMeta("mnist", input_shape=(1, 28, 28), num_classes=10)


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(  # a real PNG with bytes flipped or cut
            lambda w, h, at, value, cut: _corrupt(_png(w, h), at, value, cut),
            st.integers(1, 64),
            st.integers(1, 64),
            st.integers(0, 400),
            st.integers(0, 255),
            st.integers(0, 400),
        ),
    )
)
@example(  # found by Hypothesis: Pillow raises SyntaxError("broken PNG file") for it
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00"
    b"\x00\x00:~\x9bU\x00\x00\x00\x00IDAT\x00\x00\x00\x00\x00\x00\x00\x00"
)
def test_image_bytes_give_a_tensor_or_an_input_error(data):
    try:
        tensor = from_image_bytes(data, IMAGE_META, "fuzz.png", resize=True)
    except InputError as exc:
        assert str(exc).startswith("fuzz.png: ")
    else:
        assert tuple(tensor.shape) == (1, 28, 28)


def _corrupt(data: bytes, at: int, value: int, cut: int) -> bytes:
    data = bytearray(data)
    if at < len(data):
        data[at] = value
    return bytes(data[: len(data) - cut] if cut < len(data) else data)
