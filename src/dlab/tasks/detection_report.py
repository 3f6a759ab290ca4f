"""Report sections of detection and segmentation runs: test scenes with their predicted and true
boxes (or masks), the precision-recall curve of each class, the kinds of detection error, and
the IoU of each class.

Imported only when a report is built (it pulls in matplotlib).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from dlab.data.bundle import DataMeta
    from dlab.report.context import ReportContext
    from dlab.report.sections import Section

SCENES = 8  # scenes drawn in a grid


def sections() -> list[Section]:
    from dlab.report.sections import Section

    return [
        Section("detections", "Test scenes: predicted and true boxes", 20, detections),
        Section("pr_curves", "Precision and recall per class (IoU .5)", 22, pr_curves),
        Section("detection_errors", "What the errors are", 24, errors),
    ]


def segmentation_sections() -> list[Section]:
    from dlab.report.sections import Section

    return [
        Section("masks", "Test scenes: true and predicted masks", 20, masks),
        Section("class_iou", "Intersection over union per class", 22, class_iou),
    ]


def _first_scenes(ctx: ReportContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The split's first scenes, their targets and the model's outputs."""
    loader = ctx.bundle.loader(ctx.split)
    x, y = loader.inputs[:SCENES], loader.targets[:SCENES]
    with torch.no_grad():
        return x, y, ctx.model.eval()(x)


def shown(image: torch.Tensor, meta: DataMeta) -> torch.Tensor:
    """A (C, H, W) scene as the eye sees it, in [0, 1]: back from standardised values where the
    data were standardised."""
    if meta.mean is not None and meta.std is not None:
        view = (-1, 1, 1)
        image = image * torch.tensor(meta.std).view(view) + torch.tensor(meta.mean).view(view)
    return image.clamp(0, 1)


def _shown(image: torch.Tensor, ctx: ReportContext) -> np.ndarray:
    return shown(image, ctx.data_meta)[0].numpy()


def draw_boxes(ax: Any, boxes: np.ndarray, labels: list[str], colour: str, dashed: bool) -> None:
    """Rectangles (x0, y0, x1, y1 per row) with their labels on `ax`, dashed ones labelled below."""
    import matplotlib.patches as patches

    for (x0, y0, x1, y1), label in zip(boxes, labels, strict=True):
        ax.add_patch(
            patches.Rectangle(
                (x0 - 0.5, y0 - 0.5),
                x1 - x0,
                y1 - y0,
                fill=False,
                color=colour,
                lw=1,
                ls="--" if dashed else "-",
            )
        )
        ax.text(x0, y1 + 7 if dashed else y0 - 1, label, color=colour, fontsize=6)


def detections(ctx: ReportContext) -> str | None:
    from dlab.report.html import figure
    from dlab.report.plots import subplots
    from dlab.tasks.detection import SHOW_SCORE, decode, kept, real_boxes

    x, boxes, outputs = _first_scenes(ctx)
    classes = list(ctx.data_meta.classes or [])
    found = kept(decode(outputs, image_size=tuple(x.shape[-2:])), SHOW_SCORE)
    truth = real_boxes(boxes)
    fig, axes = subplots(2, SCENES // 2, figsize=(2.4 * SCENES // 2, 5), squeeze=False)
    for ax, image, true, pred in zip(axes.flat, x, truth, found, strict=False):
        ax.imshow(_shown(image, ctx), cmap="gray", vmin=0, vmax=1)
        draw_boxes(ax, true[:, 1:], [classes[int(c)] for c in true[:, 0]], "white", True)
        named = [f"{classes[int(c)]} {s:.2f}" for s, c in pred[:, 4:]]
        draw_boxes(ax, pred[:, :4], named, "lime", False)
        ax.axis("off")
    fig.suptitle(
        f"predicted (green, score ≥ {SHOW_SCORE}) and true boxes (white, dashed)", fontsize=9
    )
    fig.tight_layout()
    return figure(fig, "test scenes with their boxes")


def pr_curves(ctx: ReportContext) -> str | None:
    from dlab.report.html import figure, note
    from dlab.report.plots import subplots

    report = ctx.evaluation.get(ctx.split, {})
    if "pr_curves" not in report:
        return note(f"no evaluation yet: run `dlab evaluate {ctx.path} --split {ctx.split}`")
    fig, ax = subplots(figsize=(5.5, 4))
    for name, curve in report["pr_curves"].items():
        ap = report["ap50_per_class"].get(name)
        ax.plot(curve["recall"], curve["precision"], lw=1, label=f"{name} (AP {ap:.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=6, ncol=2, loc="lower left")
    fig.tight_layout()
    return (
        f"<p>COCO protocol (pycocotools), {ctx.split} split: mAP@[.5:.95] {report['map']:.4f}, "
        f"mAP@.5 {report['map50']:.4f}, mAP@.75 {report['map75']:.4f}, AR@100 "
        f"{report['mar100']:.4f}.</p>" + figure(fig, "precision-recall per class")
    )


def errors(ctx: ReportContext) -> str | None:
    from dlab.report.html import figure
    from dlab.report.plots import subplots
    from dlab.tasks.detection import ERROR_SCORE

    report = ctx.evaluation.get(ctx.split, {})
    if "errors" not in report:
        return None
    kinds = report["errors"]
    fig, ax = subplots(figsize=(5.5, 2.6))
    ax.barh(list(kinds), list(kinds.values()), color=["tab:green"] + ["tab:red"] * 4)
    for i, value in enumerate(kinds.values()):
        ax.text(value, i, f" {value}", va="center", fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel=f"detections with score ≥ {ERROR_SCORE} (missed: true boxes)")
    fig.tight_layout()
    return (
        "<p>Each detection is correct (IoU ≥ .5 with a free true box of its class), a "
        "localisation error (its class, but IoU .1-.5 or a duplicate), a classification error "
        "(IoU ≥ .5 with another class) or a false alarm; true boxes left are missed.</p>"
        + figure(fig, "kinds of error")
    )


def masks(ctx: ReportContext) -> str | None:
    from dlab.report.html import figure
    from dlab.report.plots import subplots

    x, true, logits = _first_scenes(ctx)
    predicted = logits.argmax(1)
    count = int(ctx.data_meta.num_classes or 1) + 1
    fig, axes = subplots(3, SCENES, figsize=(1.6 * SCENES, 5), squeeze=False)
    for j in range(min(SCENES, len(x))):
        axes[0, j].imshow(_shown(x[j], ctx), cmap="gray", vmin=0, vmax=1)
        axes[1, j].imshow(true[j].numpy(), cmap="tab20", vmin=0, vmax=max(count - 1, 1))
        axes[2, j].imshow(predicted[j].numpy(), cmap="tab20", vmin=0, vmax=max(count - 1, 1))
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("scene (top), true classes (middle), predicted (bottom)", fontsize=9)
    fig.tight_layout()
    return figure(fig, "masks")


def class_iou(ctx: ReportContext) -> str | None:
    from dlab.report.html import figure, note
    from dlab.report.plots import subplots

    report = ctx.evaluation.get(ctx.split, {})
    if "iou_per_class" not in report:
        return note(f"no evaluation yet: run `dlab evaluate {ctx.path} --split {ctx.split}`")
    names, values = list(report["iou_per_class"]), list(report["iou_per_class"].values())
    fig, ax = subplots(figsize=(5.5, 0.25 * len(names) + 1))
    ax.barh(names, values, color="tab:blue")
    ax.invert_yaxis()
    ax.set(xlabel="IoU", xlim=(0, 1))
    fig.tight_layout()
    return (
        f"<p>{ctx.split} split: mean IoU {report['miou']:.4f} over {len(names)} classes "
        f"(background included), {report['miou_objects']:.4f} over the objects alone; pixel "
        f"accuracy {report['pixel_accuracy']:.4f}.</p>" + figure(fig, "IoU per class")
    )
