"""An example batch for any data metadata: what registry-wide tests and FLOP counts feed a model."""

from __future__ import annotations

import torch

from dlab.data.bundle import Batch, DataMeta
from dlab.registry import MODELS


def example_meta(name: str) -> DataMeta:
    """The data a registered model is shown with when no data set is given."""
    from dlab.models import MNIST_META

    return MODELS.get(name).info.get("example_meta", MNIST_META)


def example_batch(meta: DataMeta, batch: int = 8, seed: int = 0) -> Batch:
    """Random (inputs, targets) shaped like `meta`'s data; token batches include padding."""
    from dlab.tasks import task_of

    return task_of(meta).example_batch(meta, batch, torch.Generator().manual_seed(seed))
