"""Object detection: a box and a class for every object in an image, scored by COCO mAP.

Batches are (images, boxes): boxes (B, K, 5) hold class, x0, y0, x1, y1 in pixels per object,
padded with class -1. The model (CenterNet, `dlab.models.centernet`) answers heat maps, sizes and
offsets at 1/4 of the input; the `centernet` loss draws the target heat maps from the boxes batch
by batch, and `decode` turns outputs back into scored boxes. Evaluation runs the COCO protocol
itself (pycocotools): mAP over IoU .50:.95, mAP at .50, recall at 100, AP per class, the
precision-recall curve per class, and each error counted as localisation, classification, missed
or false alarm.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from dlab.extras import require
from dlab.recipe import LossConfig
from dlab.registry import LOSSES
from dlab.tasks import Details, Task, register

if TYPE_CHECKING:
    from dlab.api import Run
    from dlab.data import DataBundle
    from dlab.data.bundle import Batch, DataMeta
    from dlab.data.scenes import Scenes
    from dlab.report.sections import Section

STRIDE = 4  # input pixels per cell of a detector's output grid (CenterNet's quarter size)
SHOW_SCORE = 0.3  # the score at which predict shows a box (mAP reads every score)
ERROR_SCORE = 0.3  # detections at or above it are sorted into the kinds of error


class DetectionDetails(Details):
    """What a detection model needs to know about its data."""

    max_objects: int = 8  # rows of a boxes tensor
    dark_background: bool | None = None


# --- targets and loss ---


def centres(boxes: torch.Tensor, grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Where each real object of `boxes` (B, K, 5) falls on the output grid (rows, cols): its
    batch index, class, cell (iy, ix), size in cells (w, h) and offset within the cell."""
    rows, cols = grid
    real = boxes[..., 0] >= 0
    batch, _ = real.nonzero(as_tuple=True)
    found = boxes[real]  # (N, 5)
    cx, cy = (found[:, 1] + found[:, 3]) / (2 * STRIDE), (found[:, 2] + found[:, 4]) / (2 * STRIDE)
    ix, iy = cx.floor().clamp(0, cols - 1), cy.floor().clamp(0, rows - 1)
    return {
        "batch": batch,
        "cls": found[:, 0].long(),
        "iy": iy.long(),
        "ix": ix.long(),
        "size": torch.stack([found[:, 3] - found[:, 1], found[:, 4] - found[:, 2]], 1) / STRIDE,
        "offset": torch.stack([cx - ix, cy - iy], 1),
    }


def heatmaps(target: dict[str, torch.Tensor], shape: tuple[int, int, int, int]) -> torch.Tensor:
    """Target heat maps (B, C, rows, cols): an elliptic Gaussian around each object's centre cell,
    exactly 1 there, with σ = 0.54·size/6 per axis (TTFNet's choice, Liu et al. 2019); where two
    objects of a class overlap, the larger value."""
    batch, classes, rows, cols = shape
    size = target["size"]
    heat = torch.zeros(batch * classes, rows * cols, device=size.device, dtype=size.dtype)
    if len(target["batch"]) == 0:
        return heat.view(shape)
    sigma = (0.54 * size / 6).clamp_min(0.25)  # (N, 2)
    xs = torch.arange(cols, device=heat.device, dtype=heat.dtype)
    ys = torch.arange(rows, device=heat.device, dtype=heat.dtype)
    gx = ((xs[None] - target["ix"][:, None]) / sigma[:, :1]) ** 2  # (N, cols)
    gy = ((ys[None] - target["iy"][:, None]) / sigma[:, 1:]) ** 2  # (N, rows)
    blobs = torch.exp(-(gy[:, :, None] + gx[:, None, :]) / 2).flatten(1)  # (N, rows·cols)
    channel = target["batch"] * classes + target["cls"]  # (N,) row of `heat`
    heat.scatter_reduce_(0, channel[:, None].expand_as(blobs), blobs, "amax")
    return heat.view(shape)


def focal_loss(logits: torch.Tensor, heat: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed (not yet divided by the object count):
    −(1−p)^α log p at centres, −(1−y)^β p^α log(1−p) elsewhere."""
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = log_p.exp()
    centre = heat >= 1
    positive = (1 - p).pow(alpha) * log_p
    negative = (1 - heat).pow(beta) * p.pow(alpha) * log_not_p
    return -torch.where(centre, positive, negative).sum()


class CenterNetLossConfig(LossConfig):
    """CenterNet's loss: focal loss on the heat maps, L1 on sizes and offsets at the centres."""

    size_weight: float = Field(0.1, ge=0, description="weight of the size L1 (sizes in cells)")
    offset_weight: float = Field(1.0, ge=0, description="weight of the offset L1")
    alpha: float = Field(2.0, ge=0, description="focal loss: how hard easy positions are damped")
    beta: float = Field(4.0, ge=0, description="focal loss: how much near-centre positions count")


class CenterNetLoss(nn.Module):
    """(outputs (B, C+4, h, w), boxes (B, K, 5)) -> the loss per object."""

    def __init__(self, config: CenterNetLossConfig):
        super().__init__()
        self.config = config

    def forward(self, outputs: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        outputs = outputs.float()
        batch, channels, rows, cols = outputs.shape
        classes = channels - 4
        target = centres(boxes, (rows, cols))
        heat = heatmaps(target, (batch, classes, rows, cols))
        count = max(len(target["batch"]), 1)
        loss = focal_loss(outputs[:, :classes], heat, self.config.alpha, self.config.beta) / count
        at = outputs[target["batch"], :, target["iy"], target["ix"]]  # (N, C+4)
        if len(at):
            c = self.config
            loss = loss + c.size_weight * F.l1_loss(at[:, classes : classes + 2], target["size"])
            loss = loss + c.offset_weight * F.l1_loss(at[:, classes + 2 :], target["offset"])
        return loss


@LOSSES.register("centernet", config=CenterNetLossConfig, summary="CenterNet (detection)")
def build_centernet_loss(config: CenterNetLossConfig) -> nn.Module:
    return CenterNetLoss(config)


# --- decoding ---


def decode(
    outputs: torch.Tensor, top_k: int = 100, image_size: tuple[int, int] | None = None
) -> torch.Tensor:
    """The `top_k` best detections per image, (B, top_k, 6): x0, y0, x1, y1, score, class.

    A detection is a position that holds the largest heat of its 3×3 neighbourhood in its class
    channel (a max-pool stands in for non-maximum suppression); its box is the regressed size
    around the centre cell plus its regressed offset, in input pixels, clipped to the image.
    """
    outputs = outputs.float()
    _, channels, rows, cols = outputs.shape
    classes = channels - 4
    heat = outputs[:, :classes].sigmoid()
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    k = min(top_k, classes * rows * cols)
    scores, index = peaks.flatten(1).topk(k)  # (B, k)
    cls, cell = index // (rows * cols), index % (rows * cols)
    iy, ix = cell // cols, cell % cols
    rest = outputs[:, classes:].flatten(2)  # (B, 4, rows·cols)
    at = rest.gather(2, cell[:, None].expand(-1, 4, -1))  # (B, 4, k): w, h, dx, dy
    cx, cy = (ix + at[:, 2]) * STRIDE, (iy + at[:, 3]) * STRIDE
    half_w, half_h = at[:, 0].clamp_min(0) * STRIDE / 2, at[:, 1].clamp_min(0) * STRIDE / 2
    height, width = image_size or (rows * STRIDE, cols * STRIDE)
    boxes = torch.stack(
        [
            (cx - half_w).clamp(0, width),
            (cy - half_h).clamp(0, height),
            (cx + half_w).clamp(0, width),
            (cy + half_h).clamp(0, height),
        ],
        dim=2,
    )
    return torch.cat([boxes, scores[..., None], cls[..., None].float()], dim=2)


# --- evaluation: the COCO protocol ---


def _coco_tools() -> tuple[Any, Any]:
    require("detection", "detection metrics (COCO's protocol)")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


def coco_files(
    truth: list[np.ndarray], found: list[np.ndarray], classes: list[str], size: tuple[int, int]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """True boxes as a COCO ground-truth dict and detections as a COCO result list (bbox as
    x, y, width, height; category ids from 1)."""
    height, width = size
    images = [{"id": i + 1, "width": width, "height": height} for i in range(len(truth))]
    annotations, detections = [], []
    for i, (true, pred) in enumerate(zip(truth, found, strict=True)):
        for c, x0, y0, x1, y1 in true.tolist():
            w, h = x1 - x0, y1 - y0
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                 "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": 0}
            )  # fmt: skip
        for x0, y0, x1, y1, score, c in pred.tolist():
            detections.append(
                {"image_id": i + 1, "category_id": int(c) + 1,
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score}
            )  # fmt: skip
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(classes)]
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def coco_map(
    truth: list[np.ndarray], found: list[np.ndarray], classes: list[str], size: tuple[int, int]
) -> dict[str, Any]:
    """COCO bbox evaluation (pycocotools) of detections against true boxes, image by image.

    truth[i]: (n, 5) class, x0, y0, x1, y1; found[i]: (m, 6) x0, y0, x1, y1, score, class.
    Returns mAP@[.5:.95], mAP@.5, mAP@.75, AR@100, AP@.5 per class and each class's
    precision-recall curve at IoU .5 (101 recall points, as COCO interpolates it).
    """
    COCO, COCOeval = _coco_tools()
    dataset, detections = coco_files(truth, found, classes, size)
    if not dataset["annotations"] or not detections:
        empty = {"map": 0.0, "map50": 0.0, "map75": 0.0, "mar100": 0.0}
        return empty | {"ap50_per_class": dict.fromkeys(classes, 0.0), "pr_curves": {}}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    # precision: (IoU thresholds, recall points, classes, area ranges, max detections)
    precision = evaluation.eval["precision"][0, :, :, 0, -1]  # IoU .5, all areas, 100 dets
    recall_points = evaluation.params.recThrs
    per_class, curves = {}, {}
    for k, name in enumerate(classes):
        column = precision[:, k]
        valid = column > -1  # -1: the class has no true box
        per_class[name] = float(column[valid].mean()) if valid.any() else None
        if valid.any():
            curves[name] = {
                "recall": recall_points[valid].tolist(),
                "precision": column[valid].tolist(),
            }
    return {
        "map": float(stats[0]),
        "map50": float(stats[1]),
        "map75": float(stats[2]),
        "mar100": float(stats[8]),
        "ap50_per_class": per_class,
        "pr_curves": curves,
    }


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (n, 4) with every box in b (m, 4), as x0, y0, x1, y1."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def error_kinds(
    truth: list[np.ndarray], found: list[np.ndarray], score: float = ERROR_SCORE
) -> dict[str, int]:
    """Detections scoring at least `score`, sorted as the COCO error analysis does (Hoiem et al.):
    correct (IoU ≥ .5, right class, true box not yet taken), localisation (right class, .1 ≤ IoU
    < .5, or a duplicate), classification (IoU ≥ .5 with a box of another class), false alarm
    (nothing near); and true boxes no correct detection found (missed)."""
    counts = dict.fromkeys(
        ("correct", "localisation", "classification", "false_alarm", "missed"), 0
    )
    for true, pred in zip(truth, found, strict=True):
        pred = pred[pred[:, 4] >= score]
        pred = pred[np.argsort(-pred[:, 4], kind="stable")]
        taken = np.zeros(len(true), dtype=bool)
        iou = box_iou(pred[:, :4], true[:, 1:]) if len(true) else np.zeros((len(pred), 0))
        for d, row in enumerate(pred):
            same = true[:, 0] == row[5] if len(true) else np.zeros(0, dtype=bool)
            free = np.where(same & ~taken, iou[d], -1.0)
            if free.size and free.max() >= 0.5:
                taken[int(free.argmax())] = True
                counts["correct"] += 1
            elif same.any() and iou[d][same].max() >= 0.1:
                counts["localisation"] += 1
            elif (~same).any() and iou[d][~same].max() >= 0.5:
                counts["classification"] += 1
            else:
                counts["false_alarm"] += 1
        counts["missed"] += int((~taken).sum())
    return counts


def example_scenes(
    meta: DataMeta, batch: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random scenes shaped like `meta`'s: rectangles whose brightness tells their class on a
    faint noise, with their boxes (B, K, 5; the last rows padding) and masks (B, H, W)."""
    _, height, width = meta.input_shape
    k, classes = meta.details.max_objects, int(meta.num_classes or 1)
    images = torch.rand(batch, *meta.input_shape, generator=generator) * 0.1
    masks = torch.zeros(batch, height, width, dtype=torch.long)
    boxes = torch.full((batch, k, 5), -1.0)
    for b in range(batch):
        for j in range(k // 2 + 1):
            w, h = (
                int(v)
                for v in torch.randint(
                    6, max(min(height, width) // 3, 7), (2,), generator=generator
                )
            )
            x0 = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            y0 = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            c = int(torch.randint(0, classes, (1,), generator=generator))
            images[b, :, y0 : y0 + h, x0 : x0 + w] = 0.3 + 0.7 * (c + 1) / classes
            masks[b, y0 : y0 + h, x0 : x0 + w] = c + 1
            boxes[b, j] = torch.tensor([c, x0, y0, x0 + w, y0 + h], dtype=torch.float32)
    return images, boxes, masks


def real_boxes(boxes: torch.Tensor) -> list[np.ndarray]:
    """A (B, K, 5) padded boxes tensor as one (n, 5) array of real objects per image."""
    return [b[b[:, 0] >= 0].numpy().astype(np.float64) for b in boxes.cpu()]


def kept(detections: torch.Tensor, score: float = 0.0) -> list[np.ndarray]:
    """(B, k, 6) decoded detections as one (m, 6) array per image, those at or above `score`."""
    return [d[d[:, 4] >= score].numpy().astype(np.float64) for d in detections.cpu()]


@register
class Detection(Task):
    """Objects in images: a box, a class and a score for each; COCO mAP."""

    name = "detection"
    Details = DetectionDetails
    headline = ("map50", "map", "mar100", "loss")
    verbs = ("predict",)
    padded_inputs = False

    def output_size(self, meta: DataMeta) -> int:
        return int(meta.num_classes or 1) + 4

    def targets_of(self, scenes: Scenes) -> torch.Tensor:
        """What this task learns from labelled scenes: their boxes."""
        return scenes.boxes

    def example_batch(self, meta: DataMeta, batch: int, generator: torch.Generator) -> Batch:
        images, boxes, _ = example_scenes(meta, batch, generator)
        return images, boxes

    def evaluate(self, run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
        loss_fn, model = LOSSES.build(run.recipe.train.loss), run.model.eval()
        truth, found, total, count = [], [], 0.0, 0
        size = tuple(bundle.meta.input_shape[1:])
        with torch.no_grad():
            for x, boxes in bundle.loader(split).epoch(0):
                outputs = model(x)
                total += float(loss_fn(outputs, boxes)) * len(x)
                count += len(x)
                truth += real_boxes(boxes)
                found += kept(decode(outputs, image_size=size))
        report: dict[str, Any] = {"samples": count, "loss": total / max(count, 1)}
        report["objects"] = int(sum(len(t) for t in truth))
        report.update(coco_map(truth, found, list(bundle.meta.classes or []), size))
        report["errors"] = error_kinds(truth, found)
        return report

    def answer(self, outputs: torch.Tensor, meta: DataMeta, top_k: int = 5) -> list[dict[str, Any]]:
        classes = list(meta.classes or [])
        size = tuple(meta.input_shape[1:])
        answers = []
        for found in kept(decode(outputs, image_size=size), SHOW_SCORE):
            boxes = [
                {
                    "class": classes[int(c)],
                    "score": round(float(s), 4),
                    "box": [round(float(v), 1) for v in (x0, y0, x1, y1)],
                }
                for x0, y0, x1, y1, s, c in found
            ]
            labels = ", ".join(sorted(b["class"] for b in boxes)) or "nothing"
            answers.append({"label": f"{len(boxes)} objects: {labels}", "boxes": boxes})
        return answers

    def draw(self, run: Run, batch: torch.Tensor, path: Path) -> Path:
        """Each scene with its boxes (score ≥ SHOW_SCORE) drawn in their class's colour."""
        from dlab.report.images import draw_boxes, save_pictures
        from dlab.tasks.detection_report import shown

        with torch.no_grad():
            answers = self.answer(run.model.eval()(batch), run.meta)
        classes = list(run.meta.classes or [])
        pictures = [
            draw_boxes(
                shown(image, run.meta),
                [
                    (*b["box"], classes.index(b["class"]), f"{b['class']}: {b['score']:.2f}")
                    for b in answer["boxes"]
                ],
            )
            for image, answer in zip(batch, answers, strict=True)
        ]
        return save_pictures(pictures, path)

    def report_sections(self) -> list[Section]:
        from dlab.tasks.detection_report import sections

        return sections()
