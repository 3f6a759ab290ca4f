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
    g = torch.Generator().manual_seed(seed)
    extra = meta.extra
    if meta.input_kind == "tokens":
        vocab, length = extra["vocab_size"], meta.input_shape[0]
        if meta.task == "language_model":
            tokens = torch.randint(0, vocab, (batch, length + 1), generator=g)
            return tokens[:, :-1], tokens[:, 1:]
        low = 4 if "pad_id" in extra else 0  # keep clear of the special ids
        if meta.task == "seq2seq":
            source = torch.randint(low, vocab, (batch, length), generator=g)
            target = torch.randint(low, vocab, (batch, length), generator=g)
            source[batch // 2 :, length // 2 :] = extra["pad_id"]
            target_in = torch.cat([torch.full((batch, 1), extra["bos_id"]), target[:, :-1]], dim=1)
            return (source, target_in), target
        tokens = torch.randint(low, vocab, (batch, length), generator=g)
        tokens[batch // 2 :, length // 2 :] = extra.get("pad_id", 0)  # half the batch is padded
        return tokens, torch.randint(0, meta.num_classes, (batch,), generator=g)
    inputs = torch.randn(batch, *meta.input_shape, generator=g)
    if meta.task == "regression":
        return inputs, torch.randn(batch, extra.get("horizon", 1), generator=g)
    return inputs, torch.randint(0, meta.num_classes, (batch,), generator=g)
