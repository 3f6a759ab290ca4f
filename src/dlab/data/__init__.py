"""Data sets: every recipe's `data:` section becomes a DataBundle of loaders and metadata."""

from __future__ import annotations

from typing import Any

from dlab.data.bundle import ArraySplits, Batch, DataBundle, DataMeta, Loader, TensorLoader, finish
from dlab.data.store import data_dir
from dlab.registry import DATASETS

__all__ = [
    "ArraySplits",
    "Batch",
    "DataBundle",
    "DataMeta",
    "Loader",
    "TensorLoader",
    "build",
    "data_dir",
]


def build(config: Any, seed: int = 0) -> DataBundle:
    """The DataBundle described by a recipe's data section; `seed` fixes the training order."""
    result = DATASETS.build(config, seed)
    if isinstance(result, DataBundle):
        return result
    return finish(result, config, config.name, seed)
