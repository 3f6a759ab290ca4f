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
    from dlab.tasks import task_of

    result = DATASETS.build(config, seed)
    if not isinstance(result, DataBundle):
        result = finish(result, config, config.name, seed)
    # a task learnt from another's data (an autoencoder on labelled images) reshapes the bundle
    return task_of(getattr(config, "task", None) or result.meta.task).adapt(result, config)
