"""In-memory arrays as a DataBundle: what `dlab.fit((x, y), ...)` trains on."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dlab.data.bundle import DataBundle, DataMeta, TensorLoader
from dlab.errors import DlabError
from dlab.registry import LOSSES


def _tensor(array: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    tensor = array if isinstance(array, torch.Tensor) else torch.as_tensor(np.asarray(array))
    return tensor.to(dtype) if dtype is not None else tensor


def _inputs_tensor(array: Any) -> torch.Tensor:
    """Integer arrays are token ids (kept as int64), except uint8 (pixels); the rest is float32."""
    tensor = _tensor(array)
    if tensor.dtype in (torch.bool, torch.uint8) or tensor.is_floating_point():
        return tensor.float()
    return tensor.long()


def as_bundle(data: Any, val_data: Any, batch_size: int, seed: int, loss: str | dict) -> DataBundle:
    """What `dlab.fit` trains on: a DataBundle as given, a data set by name (or recipe section),
    or (inputs, targets) arrays, whose task the loss and the targets' shape decide."""
    if isinstance(data, DataBundle):
        return data
    if isinstance(data, str | dict):
        section = {"name": data} if isinstance(data, str) else dict(data)
        section.setdefault("batch_size", batch_size)
        from dlab.data import build
        from dlab.recipe import load_recipe

        recipe = load_recipe({"data": section, "model": {"name": "mlp"}})
        return build(recipe.data, seed)
    if not (isinstance(data, tuple | list) and len(data) == 2):
        raise DlabError(
            "fit: data should be (inputs, targets), a DataBundle, or a data set name such as 'mnist_sample'"
        )
    loss_name = loss if isinstance(loss, str) else loss.get("name", "")
    classification = LOSSES.get(loss_name).name == "cross_entropy"
    target_dtype = torch.long if classification else torch.float32
    x, y = _inputs_tensor(data[0]), _tensor(data[1], target_dtype)
    if len(x) != len(y):
        raise DlabError(f"fit: {len(x)} inputs but {len(y)} targets")
    num_classes = int(y.max()) + 1 if classification else None
    tokens = not x.is_floating_point()
    language_model = classification and y.ndim == 2
    meta = DataMeta(
        dataset="arrays",
        task="language_model"
        if language_model
        else ("classification" if classification else "regression"),
        input_kind="tokens" if tokens else ("image" if x.ndim == 4 else "vector"),
        input_shape=tuple(x.shape[1:]),
        num_classes=num_classes,
        classes=[str(i) for i in range(num_classes)] if num_classes else None,
        sizes={"train": len(x)},
        # token ids: the vocabulary is every id seen, in the inputs and (next tokens) targets
        details={"vocab_size": _vocabulary(x, y, language_model)} if tokens else None,
    )
    val = None
    if val_data is not None:
        vx, vy = _inputs_tensor(val_data[0]), _tensor(val_data[1], target_dtype)
        val = TensorLoader(vx, vy, max(batch_size, 256))
        meta.sizes["val"] = len(vx)
    return DataBundle(TensorLoader(x, y, batch_size, shuffle=True, seed=seed), val, None, meta)


def _vocabulary(x: torch.Tensor, y: torch.Tensor, targets_are_tokens: bool) -> int:
    largest = int(x.max()) if len(x) else 0
    if targets_are_tokens and len(y):
        largest = max(largest, int(y.max()))
    return largest + 1
