"""Labelled images as an autoencoder learns them: batches of (x, x), pixels in [0, 1].

The labels are kept aside (`bundle.extra["labels"]`, per split) for scoring clusters and drawing
pictures only; with `data.anomalies` the named classes are removed from training and validation
and stay in the test split, where they are the anomalies to find.
"""

from __future__ import annotations

from typing import Any

import torch

from dlab.data.bundle import DataBundle, DataMeta, TensorLoader
from dlab.errors import RecipeError


def reconstruction_bundle(bundle: DataBundle, config: Any) -> DataBundle:
    """`bundle` (images with labels) as (image, image) batches with the labels set aside."""
    meta = bundle.meta
    if getattr(config, "augment", None) is not None:
        raise RecipeError("data.augment: an autoencoder reconstructs the images it is given")
    classes = meta.classes or []
    unknown = [c for c in config.anomalies if c not in classes]
    if unknown:
        raise RecipeError(f"data.anomalies: '{unknown[0]}' is not a class ({', '.join(classes)})")
    held = torch.tensor([classes.index(c) for c in config.anomalies], dtype=torch.long)
    loaders: dict[str, TensorLoader] = {}
    labels: dict[str, torch.Tensor] = {}
    for split in ("train", "val", "test"):
        loader = getattr(bundle, split)
        if loader is None:
            continue
        if not isinstance(loader, TensorLoader):
            raise RecipeError(
                "data.loader: reconstruction reads in-memory data; set loader: memory"
            )
        x, y = pixels(loader.inputs, meta), loader.targets
        if split != "test" and len(held):
            keep = ~torch.isin(y, held)
            x, y = x[keep], y[keep]
        size = config.batch_size if split == "train" else config.eval_batch_size
        loaders[split] = TensorLoader(x, x, size, shuffle=split == "train", seed=loader.seed)
        labels[split] = y
    details = meta.details.model_dump(exclude_none=True)
    adapted = DataMeta(
        dataset=meta.dataset,
        task="reconstruction",
        input_kind=meta.input_kind,
        input_shape=meta.input_shape,
        num_classes=meta.num_classes,
        classes=meta.classes,
        sizes={split: len(y) for split, y in labels.items()},
        details={
            "dark_background": details.get("dark_background"),
            "clusters": config.clusters or len(classes) - len(held),
            "anomalies": list(config.anomalies),
        },
    )
    return DataBundle(
        loaders["train"], loaders.get("val"), loaders.get("test"), adapted, extra={"labels": labels}
    )


def pixels(x: torch.Tensor, meta: DataMeta) -> torch.Tensor:
    """Inputs back in [0, 1] where the data set standardised them (the targets of a BCE loss)."""
    if meta.mean is None or meta.std is None:
        return x
    shape = (1, -1) + (1,) * (x.ndim - 2) if meta.input_kind == "image" else (1, -1)
    mean, std = torch.tensor(meta.mean).view(shape), torch.tensor(meta.std).view(shape)
    return (x * std + mean).clamp(0, 1)
