"""The classification task's report sections: results per class, sample predictions with the
most confident mistakes, and what the model looks at (integrated gradients, first-layer filters).

Imported only when a report is built (it pulls in matplotlib through dlab.report).
"""

from __future__ import annotations

import html as html_lib

import torch

from dlab.report import plots
from dlab.report.context import ReportContext
from dlab.report.html import escape, figure, note, table
from dlab.report.sections import Section


def classification(ctx: ReportContext) -> str | None:
    split = ctx.split
    report = ctx.evaluation.get(split)
    if report is None or "confusion_matrix" not in report:
        return note(
            f"no evaluation of the {split} split yet: run `dlab evaluate {ctx.path} --split {split}`"
        )
    classes = ctx.data_meta.classes or [str(i) for i in range(len(report["confusion_matrix"]))]
    parts = [
        f"<p>{escape(split)} split: accuracy {report['accuracy']:.4f}, macro F1 {report['macro_f1']:.4f} over {report['samples']:,} samples</p>"
    ]
    parts.append(
        figure(plots.confusion_figures(report["confusion_matrix"], classes), "confusion matrix")
    )
    parts.append(
        "<h3>Per class</h3>"
        + table(
            [
                [r["class"], r["precision"], r["recall"], r["f1"], r["support"]]
                for r in report["per_class"]
            ],
            ["class", "precision", "recall", "F1", "support"],
        )
    )
    return "".join(parts)


def spread(count: int, total: int) -> list[int]:
    """`count` indices evenly across `total` samples (splits are often stored class by class)."""
    return sorted({round(i * (total - 1) / max(count - 1, 1)) for i in range(min(count, total))})


def _differentiable(ctx: ReportContext) -> bool:
    """Whether true gradients flow through the model: not after int8 quantization, even where float layers remain."""
    if (ctx.meta.get("compression") or {}).get("method") == "quantize":
        return False
    return any(p.requires_grad and p.is_floating_point() for p in ctx.model.parameters())


def _describe(ctx: ReportContext, item: torch.Tensor) -> str:
    tokenizer = ctx.run.tokenizer
    return (
        tokenizer.decode([int(i) for i in item if int(i) != (tokenizer.pad_id or 0)])
        if tokenizer
        else ""
    )


def predictions(ctx: ReportContext) -> str | None:
    probs, targets, inputs = ctx.predictions
    classes = ctx.data_meta.classes or [str(i) for i in range(probs.shape[1])]
    confidence, predicted = probs.max(1)
    wrong = torch.nonzero(predicted != targets).flatten()
    worst = wrong[confidence[wrong].argsort(descending=True)][:16]
    meta = ctx.data_meta
    if meta.input_kind == "image":
        shown = spread(16, len(inputs))

        def grid(indices, with_truth: bool) -> str:
            captions = [
                f"{classes[int(predicted[i])]} {float(confidence[i]):.0%}"
                + (f" (is {classes[int(targets[i])]})" if with_truth else "")
                for i in indices
            ]
            colors = ["#17703a" if predicted[i] == targets[i] else "#a4262c" for i in indices]
            return figure(
                plots.image_grid(
                    [inputs[i] for i in indices], captions, colors, meta.mean, meta.std
                ),
                "predictions",
            )

        parts = [
            f"<h3>Samples across the {escape(ctx.split)} split (green: right, red: wrong)</h3>",
            grid(shown, False),
        ]
        parts += [
            "<h3>Most confidently wrong</h3>",
            grid(worst.tolist(), True) if len(worst) else note("no mistakes in these samples"),
        ]
        return "".join(parts)
    if meta.input_kind == "series" and len(meta.input_shape) == 2:
        return _clips(ctx, inputs, predicted, targets, confidence, worst, classes)
    if meta.input_kind == "tokens":
        return _texts(ctx, inputs, predicted, targets, confidence, worst, classes)
    return None


def _texts(ctx, inputs, predicted, targets, confidence, worst, classes) -> str:
    """Sample texts and the most confident mistakes, as tables."""
    rows = [
        [
            _describe(ctx, inputs[i]),
            classes[int(targets[i])],
            classes[int(predicted[i])],
            float(confidence[i]),
        ]
        for i in spread(10, len(inputs))
    ]
    mistakes = [
        [
            _describe(ctx, inputs[i]),
            classes[int(targets[i])],
            classes[int(predicted[i])],
            float(confidence[i]),
        ]
        for i in worst[:10].tolist()
    ]
    columns = ["text", "true", "predicted", "confidence"]
    return (
        "<h3>Sample predictions</h3>"
        + table(rows, columns)
        + "<h3>Most confidently wrong</h3>"
        + (table(mistakes, columns) if mistakes else note("no mistakes"))
    )


def _clips(ctx, inputs, predicted, targets, confidence, worst, classes) -> str:
    """Feature frames (spectrogram-like) of sample clips and of the most confident mistakes."""

    def grid(indices: list[int], with_truth: bool) -> str:
        captions = [
            f"{classes[int(predicted[i])]} {float(confidence[i]):.0%}"
            + (f" (is {classes[int(targets[i])]})" if with_truth else "")
            for i in indices
        ]
        colors = ["#17703a" if predicted[i] == targets[i] else "#a4262c" for i in indices]
        return figure(plots.frames_grid([inputs[i] for i in indices], captions, colors), "clips")

    audio = ctx.data_meta.audio
    what = "log-mel" if audio is not None and audio.kind == "log_mel" else "MFCC"
    return (
        f"<h3>Clips across the {escape(ctx.split)} split: {what} over time (green: right, "
        "red: wrong)</h3>"
        + grid(spread(8, len(inputs)), False)
        + "<h3>Most confidently wrong</h3>"
        + (grid(worst[:8].tolist(), True) if len(worst) else note("no mistakes in these samples"))
    )


def series_explanations(ctx: ReportContext) -> str | None:
    """Integrated gradients over time × features: which moments and bands decided."""
    meta = ctx.data_meta
    if meta.input_kind != "series" or len(meta.input_shape) != 2 or not _differentiable(ctx):
        return None
    from dlab.report.explain import image_attributions

    probs, _targets, inputs = ctx.predictions
    chosen = spread(4, len(inputs))
    clips = torch.stack([inputs[i] for i in chosen])
    predicted = probs[chosen].argmax(1)
    classes = meta.classes or [str(i) for i in range(probs.shape[1])]
    attributions = image_attributions(ctx.model, clips, predicted)
    captions = [classes[int(c)] for c in predicted]
    return (
        "<p>Integrated gradients (captum) for the predicted class, under each clip: red frames "
        "and features push towards it, blue away.</p>"
        + figure(
            plots.frames_grid(list(clips), captions, ["#1d2330"] * 4, list(attributions)),
            "integrated gradients over time",
        )
    )


def image_explanations(ctx: ReportContext) -> str | None:
    if ctx.data_meta.input_kind != "image":
        return None
    from dlab.report.explain import image_attributions

    if not _differentiable(ctx):
        return note(
            f"attributions need gradients, which a quantized model does not have: see the report of {ctx.meta.get('compressed_from', 'its float source')}"
        )

    probs, _targets, inputs = ctx.predictions
    meta = ctx.data_meta
    chosen = spread(8, len(inputs))
    images = torch.stack([inputs[i] for i in chosen])
    predicted = probs[chosen].argmax(1)
    classes = meta.classes or [str(i) for i in range(probs.shape[1])]
    attributions = image_attributions(ctx.model, images, predicted)
    parts = [
        "<p>Integrated gradients (captum) for the predicted class: red pixels push towards it, blue away.</p>",
        figure(
            plots.attribution_grid(
                list(images),
                list(attributions),
                [classes[int(c)] for c in predicted],
                meta.mean,
                meta.std,
            ),
            "integrated gradients",
        ),
    ]
    conv = next((m for m in ctx.model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if conv is not None:
        weights = conv.weight.detach().numpy()
        kh, kw = weights.shape[2:]
        parts.append(
            f"<h3>First convolution: {weights.shape[0]} filters, each seeing a {kh}×{kw} patch of {weights.shape[1]} channel(s)</h3>"
        )
        parts.append(figure(plots.filter_grid(weights), "first-layer filters"))
    return "".join(parts)


def token_explanations(ctx: ReportContext) -> str | None:
    if ctx.data_meta.input_kind != "tokens":
        return None
    from dlab.report.explain import token_attributions

    if not _differentiable(ctx):
        return note(
            f"attributions need gradients, which a quantized model does not have: see the report of {ctx.meta.get('compressed_from', 'its float source')}"
        )

    probs, _targets, inputs = ctx.predictions
    tokenizer = ctx.run.tokenizer
    pad = tokenizer.pad_id or 0
    classes = ctx.data_meta.classes or [str(i) for i in range(probs.shape[1])]
    chosen = spread(6, len(inputs))
    batch = torch.stack([inputs[i] for i in chosen])
    predicted = probs[chosen].argmax(1)
    attributions = token_attributions(ctx.model, batch, predicted, pad)
    lines = []
    for row, scores, label in zip(batch, attributions, predicted, strict=True):
        keep = row != pad
        scale = max(float(scores[keep].abs().max()), 1e-12) if bool(keep.any()) else 1.0
        spans = []
        for token, score in zip(row[keep].tolist(), scores[keep].tolist(), strict=True):
            strength = min(abs(score) / scale, 1.0)
            color = (
                f"rgba(214,51,48,{strength:.2f})"
                if score > 0
                else f"rgba(34,110,214,{strength:.2f})"
            )
            spans.append(
                f'<span class="tok" style="background:{color}">{html_lib.escape(tokenizer.decode([token]) or "·")}</span>'
            )
        lines.append(f"<p><b>{escape(classes[int(label)])}</b>: {''.join(spans)}</p>")
    return (
        "<p>Integrated gradients at the embedding layer (captum): red words push towards the predicted class, blue words away.</p>"
        + "".join(lines)
    )


def sections() -> list[Section]:
    """The sections, in report order."""
    return [
        Section("classification", "Classification results", 20, classification),
        Section("predictions", "Sample predictions and confident mistakes", 25, predictions),
        Section("image_explanations", "What the model looks at", 30, image_explanations),
        Section("token_explanations", "Which words decided", 30, token_explanations),
        Section("series_explanations", "Which moments decided", 30, series_explanations),
    ]
