"""Semantic segmentation: a class for every pixel (0 is the background, class k is k + 1).

Batches are (images, masks): masks (B, H, W) of class indices. The model (a U-Net) answers
per-pixel logits (B, classes + 1, H, W), the `pixel_cross_entropy` loss scores them, and
evaluation reports the intersection over union of each class and their mean (torchmetrics'
Jaccard index, background included as Pascal VOC counts it), with pixel accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlab.recipe import LossConfig
from dlab.registry import LOSSES
from dlab.tasks import Details, Task, register

if TYPE_CHECKING:
    from dlab.api import Run
    from dlab.data import DataBundle
    from dlab.data.bundle import Batch, DataMeta
    from dlab.data.scenes import Scenes
    from dlab.report.sections import Section

BACKGROUND = "background"


class SegmentationDetails(Details):
    """What a segmentation model needs to know about its data."""

    max_objects: int = 8
    dark_background: bool | None = None


class PixelCrossEntropyConfig(LossConfig):
    """Cross-entropy of every pixel's class, averaged over the pixels."""


class PixelCrossEntropy(nn.Module):
    """(logits (B, K, H, W), masks (B, H, W)) -> mean cross-entropy per pixel."""

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), masks)


@LOSSES.register(
    "pixel_cross_entropy",
    config=PixelCrossEntropyConfig,
    summary="per-pixel classes (segmentation)",
)
def build_pixel_cross_entropy(config: PixelCrossEntropyConfig) -> nn.Module:
    return PixelCrossEntropy()


def pixel_classes(meta: DataMeta) -> list[str]:
    """The names of a mask's values: the background, then the data's classes."""
    return [BACKGROUND, *(meta.classes or [])]


def mask_png(mask: torch.Tensor) -> str:
    """A (H, W) class mask as a base64 8-bit grey PNG whose pixel values are the classes."""
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask.to(torch.uint8).cpu().numpy(), mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@register
class Segmentation(Task):
    """A class for every pixel of an image; mean IoU."""

    name = "segmentation"
    Details = SegmentationDetails
    headline = ("miou", "pixel_accuracy", "loss")
    verbs = ("predict",)
    padded_inputs = False

    def output_size(self, meta: DataMeta) -> int:
        return int(meta.num_classes or 1) + 1

    def targets_of(self, scenes: Scenes) -> torch.Tensor:
        """What this task learns from labelled scenes: their masks."""
        return scenes.masks

    def example_batch(self, meta: DataMeta, batch: int, generator: torch.Generator) -> Batch:
        from dlab.tasks.detection import example_scenes

        images, _, masks = example_scenes(meta, batch, generator)
        return images, masks

    def evaluate(self, run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
        from torchmetrics.classification import MulticlassJaccardIndex

        names = pixel_classes(bundle.meta)
        jaccard = MulticlassJaccardIndex(num_classes=len(names), average="none")
        loss_fn, model = LOSSES.build(run.recipe.train.loss), run.model.eval()
        total = correct = pixels = count = 0.0
        with torch.no_grad():
            for x, masks in bundle.loader(split).epoch(0):
                logits = model(x)
                total += float(loss_fn(logits, masks)) * len(x)
                predicted = logits.argmax(1)
                jaccard.update(predicted, masks)
                correct += float((predicted == masks).sum())
                pixels += masks.numel()
                count += len(x)
        iou = jaccard.compute().tolist()
        present = [i for i, name in enumerate(names) if name != BACKGROUND]
        return {
            "samples": int(count),
            "loss": total / max(count, 1),
            "miou": float(np.mean(iou)),
            "miou_objects": float(np.mean([iou[i] for i in present])),
            "pixel_accuracy": correct / max(pixels, 1),
            "iou_per_class": dict(zip(names, iou, strict=True)),
        }

    def answer(self, outputs: torch.Tensor, meta: DataMeta, top_k: int = 5) -> list[dict[str, Any]]:
        """Each image's pixel count per class found, and its mask as a PNG (base64, lossless):
        pixel value k is class k - 1, 0 the background."""
        names = pixel_classes(meta)
        answers = []
        for mask in outputs.argmax(1):
            counts = torch.bincount(mask.flatten(), minlength=len(names)).tolist()
            found = {names[k]: n for k, n in enumerate(counts) if n and k}
            label = ", ".join(f"{name} ({n} px)" for name, n in found.items()) or "background only"
            answers.append({"label": label, "pixels": found, "mask_png": mask_png(mask)})
        return answers

    def draw(self, run: Run, batch: torch.Tensor, path: Path) -> Path:
        """Each scene with every pixel's predicted class painted over it in its colour."""
        from dlab.report.images import overlay_mask, save_pictures
        from dlab.tasks.detection_report import shown

        with torch.no_grad():
            predicted = run.model.eval()(batch).argmax(1)
        pictures = [
            overlay_mask(shown(x, run.meta), m) for x, m in zip(batch, predicted, strict=True)
        ]
        return save_pictures(pictures, path)

    def report_sections(self) -> list[Section]:
        from dlab.tasks.detection_report import segmentation_sections

        return segmentation_sections()
