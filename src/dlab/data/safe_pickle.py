"""Load the pickles some data sets are published as (CIFAR-10, MNIST-1D) without running their code.

A pickle can name any Python callable; this loader allows only what plain NumPy arrays need.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from dlab.errors import DataError

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how Python 3 writes bytes under protocol 2; can only build bytes
}


class _ArraysOnly(pickle.Unpickler):
    def __init__(self, file: Any, source: str, **kwargs: Any):
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise DataError(
            f"{self.source}: refuses to load {module}.{name} from a pickle (only arrays are allowed)"
        )


def load_arrays_pickle(data: bytes | Path, source: str = "", encoding: str = "ASCII") -> Any:
    """Unpickle `data` (bytes or a file path), allowing only plain arrays, dicts, lists and scalars."""
    if isinstance(data, Path):
        source = source or str(data)
        data = data.read_bytes()
    try:
        return _ArraysOnly(io.BytesIO(data), source, encoding=encoding).load()
    except DataError:
        raise
    except Exception as exc:  # truncated or not a pickle at all
        raise DataError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from None
