"""Report sections, registered by name and order; each decides whether it applies to a run.

A section is a function (ReportContext) -> HTML fragment, or None when it does not apply.
Later features (compression, tuning, federated runs) add theirs with @section as well.
"""

from __future__ import annotations

import html as html_lib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from dlab.report import plots
from dlab.report.context import ReportContext
from dlab.report.html import escape, figure, note, number, table

Render = Callable[[ReportContext], str | None]


@dataclass(frozen=True)
class Section:
    """One part of a report."""

    name: str
    title: str
    order: int
    render: Render


SECTIONS: dict[str, Section] = {}


def section(name: str, title: str, order: int) -> Callable[[Render], Render]:
    """Register a report section."""

    def register(render: Render) -> Render:
        SECTIONS[name] = Section(name, title, order, render)
        return render

    return register


# --- always -----------------------------------------------------------------------------------


@section("summary", "Summary", 0)
def summary(ctx: ReportContext) -> str:
    meta, recipe = ctx.meta, ctx.recipe
    hardware = meta.get("hardware", {})
    data = meta.get("data", {})
    optimizer = recipe.train.optimizer
    rows = [
        (
            "model",
            f"{recipe.model.name} ({number(meta.get('parameters', 0))} parameters, {number(meta.get('trainable_parameters', meta.get('parameters', 0)))} trainable)",
        ),
        (
            "data",
            f"{recipe.data.name}: "
            + ", ".join(f"{k} {number(v)}" for k, v in data.get("sizes", {}).items()),
        ),
        (
            "optimizer",
            f"{optimizer.name}, lr {optimizer.lr:g}, schedule {recipe.train.scheduler.name}, batch {recipe.data.batch_size}",
        ),
        (
            "epochs",
            f"{meta.get('epochs', 0)} of {recipe.train.epochs} ({number(meta.get('steps', 0))} steps)",
        ),
        (
            "status",
            f"{meta.get('status', '?')}"
            + (
                f" — {meta['stop_reason']}"
                if meta.get("stop_reason") not in (None, "completed")
                else ""
            ),
        ),
        ("seed", recipe.seed),
        (
            "training time",
            f"{meta.get('train_seconds', 0):.1f} s, {number(meta.get('samples_per_s', 0))} samples/s",
        ),
        (
            "hardware",
            f"{hardware.get('cpu', '?')}, {hardware.get('cores', '?')} cores, {hardware.get('threads', '?')} threads, device {hardware.get('device', '?')}",
        ),
        (
            "versions",
            f"dlab {hardware.get('dlab', '?')}, torch {hardware.get('torch', '?')}, Python {hardware.get('python', '?')}",
        ),
    ]
    headline = ""
    for split, report in ctx.evaluation.items():
        shown = list(ctx.headline(report).items())
        if shown:
            headline += f"<h3>{escape(split)} split</h3>" + table(
                [[k, v] for k, v in shown], ["metric", "value"]
            )
    return table(rows, ["", ""]) + (headline or note("no evaluation yet: run `dlab evaluate RUN`"))


@section("curves", "Training curves", 10)
def curves(ctx: ReportContext) -> str:
    epochs, steps = ctx.epochs, ctx.steps
    if not epochs and not steps:
        return note("no metrics were logged: the run stopped before its first log interval")
    parts = []
    if len(epochs) == 1:
        parts.append(note("one epoch: the per-epoch curves are single points"))
    metrics = sorted(
        {k.split("_", 1)[1] for r in epochs for k in r if k.startswith(("train_", "val_"))}
    )
    if epochs and not any(k.startswith("val_") for k in epochs[-1]):
        parts.append(note("no validation split: only training curves are shown"))
    figures = []
    for metric in metrics:
        series = {
            split: (
                [r["epoch"] for r in epochs if f"{split}_{metric}" in r],
                [r[f"{split}_{metric}"] for r in epochs if f"{split}_{metric}" in r],
            )
            for split in ("train", "val")
        }
        series = {k: v for k, v in series.items() if v[0]}
        figures.append(
            figure(
                plots.curves_figure(series, metric.replace("_", " "), "epoch"),
                f"{metric} per epoch",
            )
        )
    if steps:
        figures.append(
            figure(
                plots.curves_figure(
                    {"loss": ([r["step"] for r in steps], [r["loss"] for r in steps])},
                    "training loss per step",
                    "step",
                ),
                "loss per step",
            )
        )
        figures.append(
            figure(
                plots.curves_figure(
                    {"lr": ([r["step"] for r in steps], [r["lr"] for r in steps])},
                    "learning rate",
                    "step",
                ),
                "learning rate",
            )
        )
        norms = [r for r in steps if "grad_norm" in r]
        if norms:
            figures.append(
                figure(
                    plots.curves_figure(
                        {"norm": ([r["step"] for r in norms], [r["grad_norm"] for r in norms])},
                        "gradient norm",
                        "step",
                        log_y=True,
                    ),
                    "gradient norm",
                )
            )
    elif epochs:
        parts.append(
            note("the run was shorter than one log interval (train.log_every): no per-step curves")
        )
    return "".join(parts) + '<div class="row">' + "".join(figures) + "</div>"


# --- classification ---------------------------------------------------------------------------


@section("classification", "Classification results", 20)
def classification(ctx: ReportContext) -> str | None:
    if ctx.task != "classification":
        return None
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


@section("predictions", "Sample predictions and confident mistakes", 25)
def predictions(ctx: ReportContext) -> str | None:
    if ctx.task != "classification":
        return None
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
    if meta.input_kind == "tokens":
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
    return None


@section("image_explanations", "What the model looks at", 30)
def image_explanations(ctx: ReportContext) -> str | None:
    if ctx.task != "classification" or ctx.data_meta.input_kind != "image":
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


@section("token_explanations", "Which words decided", 30)
def token_explanations(ctx: ReportContext) -> str | None:
    if ctx.task != "classification" or ctx.data_meta.input_kind != "tokens":
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


@section("attention", "Attention maps", 35)
def attention_maps(ctx: ReportContext) -> str | None:
    from dlab.models.blocks import MultiHeadAttention

    if not any(isinstance(m, MultiHeadAttention) for m in ctx.model.modules()):
        return None
    from dlab.report.explain import attention_weights

    x, _ = next(ctx.bundle.loader(ctx.split).epoch(0))
    first = tuple(t[:1] for t in x) if isinstance(x, tuple) else x[:1]
    tokens_source = first[0] if isinstance(first, tuple) else first
    tokenizer = ctx.run.tokenizer
    pad = (tokenizer.pad_id if tokenizer else None) or 0
    ids = [int(i) for i in tokens_source[0] if int(i) != pad or ctx.task == "language_model"][:48]
    trimmed = torch.tensor([ids])
    inputs = (trimmed, first[1][:, :24]) if isinstance(first, tuple) else trimmed
    weights = [w.numpy() for w in attention_weights(ctx.model, inputs)]
    if not weights:
        return None
    labels = [tokenizer.decode([i]) if tokenizer else str(i) for i in ids]
    caption = (
        "encoder self-attention of the first example"
        if isinstance(first, tuple)
        else "self-attention of the first example"
    )
    return (
        f"<p>{escape(caption)}: row = query position, column = key position, brighter = more weight.</p>"
        + figure(plots.attention_figure(weights[:6], labels), "attention maps")
    )


# --- other tasks ------------------------------------------------------------------------------


@section("samples", "Generated text", 40)
def generated(ctx: ReportContext) -> str | None:
    if ctx.task != "language_model":
        return None
    report = ctx.evaluation.get("val", {})
    parts = []
    if "loss" in report:
        parts.append(
            f"<p>validation loss {report['loss']:.4f} (perplexity {report.get('perplexity', float('nan')):.2f})</p>"
        )
    known = getattr(
        ctx.run.tokenizer, "index", None
    )  # a character vocabulary, or None for subwords
    prompts = [
        None,
        *[p for p in ("ROMEO:", "The ") if known is None or all(c in known for c in p)][:1],
    ]
    for prompt in prompts:
        text = ctx.run.generate(prompt, max_new_tokens=250, temperature=0.8, seed=0)
        label = "no prompt" if prompt is None else f"prompt {prompt!r}"
        parts.append(
            f"<h3>{escape(label)}, temperature 0.8</h3><pre>{escape((prompt or '') + text)}</pre>"
        )
    return "".join(parts)


@section("translations", "Translations", 40)
def translations(ctx: ReportContext) -> str | None:
    if ctx.task != "seq2seq":
        return None
    report = ctx.evaluation.get(ctx.split, {})
    if "bleu" not in report:
        return note("no BLEU yet: run `dlab evaluate RUN`")
    rows = [[e["source"], e["translation"], e["reference"]] for e in report.get("examples", [])]
    return (
        f'<p>BLEU {report["bleu"]:.2f} on the {escape(ctx.split)} split, beam {report.get("beam", "?")} <span class="note">({escape(report.get("bleu_signature", ""))})</span></p>'
        + table(rows, ["source", "translation", "reference"])
    )


@section("forecast", "Forecast vs actual", 40)
def forecast(ctx: ReportContext) -> str | None:
    if ctx.task != "regression" or ctx.data_meta.input_kind != "series":
        return None
    extra = ctx.data_meta.extra
    target, spread, shift = (
        extra["target_index"],
        extra["spread"][extra["target_index"]],
        extra["shift"][extra["target_index"]],
    )
    actual, predicted, naive = [], [], []
    with torch.no_grad():
        for x, y in ctx.bundle.loader(ctx.split).epoch(0):
            predicted.append(ctx.model(x)[:, 0])
            actual.append(y[:, 0])
            naive.append(x[:, -1, target])

    def units(parts):
        return torch.cat(parts).numpy() * spread + shift

    report = ctx.evaluation.get(ctx.split, {})
    mae = report.get("mae", float(np.abs(units(predicted) - units(actual)).mean()))
    title = f"{ctx.data_meta.dataset}, {ctx.split} split: model MAE {mae:.3g} vs naive {report.get('naive_mae', float('nan')):.3g}"
    return figure(
        plots.forecast_figure(units(actual), units(predicted), units(naive), title),
        "forecast vs actual",
    )


@section("tuning", "Hyper-parameter search", 50)
def tuning(ctx: ReportContext) -> str | None:
    summary_ = ctx.meta.get("tuning")
    if not summary_:
        return None
    trials = summary_["trials"]
    states = {s: sum(t["state"] == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    parts = [
        f"<p>Optuna study <b>{escape(summary_['study'])}</b> ({escape(summary_['storage'])}): {len(trials)} trials, "
        f"{states['COMPLETE']} completed, {states['PRUNED']} pruned, {states['FAIL']} failed. This run trained the best "
        f"parameters ({escape(summary_['metric'])} {summary_['best_value']:.4g}, {escape(summary_['direction'])}).</p>",
        table(
            [
                [k, v if isinstance(v, int | float) else str(v)]
                for k, v in summary_["best_params"].items()
            ],
            ["parameter", "best value"],
        ),
        '<div class="row">'
        + figure(
            plots.tuning_figure(trials, summary_["direction"], summary_["metric"]), "tuning history"
        ),
    ]
    if summary_.get("importances"):
        parts.append(
            figure(plots.importance_figure(summary_["importances"]), "parameter importances")
        )
    else:
        parts.append(note("too few completed trials to estimate parameter importances"))
    return "".join(parts) + "</div>"


@section("compression", "Compression", 45)
def compression(ctx: ReportContext) -> str | None:
    details = ctx.meta.get("compression")
    if not details:
        return None
    method = details["method"]
    what = {
        "quantize": f"int8 quantization ({details.get('mode')}; quantized layers: {details.get('quantized_layers')})",
        "distill": f"knowledge distillation from {details.get('teacher')} (α {details.get('alpha')}, temperature {details.get('temperature')})",
        "prune": f"{'structured (channels/units)' if details.get('structured') else 'unstructured global magnitude'} pruning of "
        f"{details.get('amount', 0):.0%}, fine-tuned {details.get('finetune_epochs')} epochs; {details.get('nonzero_weights', 1):.1%} of weights non-zero",
    }[method]
    rows = [
        [
            r["model"],
            r["accuracy"],
            r["size_bytes"] / 1e6,
            r["parameters"],
            r["batch1_p50_ms"],
            r["batch64_p50_ms"],
        ]
        for r in details["comparison"]
    ]
    size_note = " (gzip-compressed)" if details.get("size") == "gzip-compressed state" else ""
    columns = [
        "model",
        "accuracy",
        f"size MB{size_note}",
        "parameters",
        "latency batch 1 (ms, p50)",
        "latency batch 64 (ms, p50)",
    ]
    return (
        f"<p>{escape(what)}, from {escape(ctx.meta.get('compressed_from', '?'))}. Measured side by side in one process on this machine's CPU.</p>"
        + table(rows, columns)
    )


@section("federated", "Federated learning", 46)
def federated(ctx: ReportContext) -> str | None:
    settings = ctx.meta.get("federated")
    log = ctx.path / "federated.jsonl"
    if not settings or not log.is_file():
        return None
    import json

    rounds = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    skew = f"Dirichlet(α={settings['alpha']})" if settings.get("alpha") else "IID"
    central = ctx.meta.get("central")
    parts = [
        f"<p>Flower {escape(settings['strategy'])} over {settings['clients']} clients "
        f"({escape(skew)} partitions of {number(sum(settings.get('client_samples', [])))} samples), "
        f"{settings['rounds']} rounds of {settings['local_epochs']} local epoch(s), "
        f"{settings['fraction']:.0%} of clients per round. Global accuracy is measured on the "
        "validation split after each round (round 0: the initial model).</p>"
    ]
    series = {"federated": ([r["epoch"] for r in rounds], [r["val_accuracy"] for r in rounds])}
    if central and central.get("accuracy") is not None:
        xs = [0, rounds[-1]["epoch"]]
        series[f"centralised ({central['epochs']} epochs, {central['split']})"] = (
            xs,
            [central["accuracy"]] * 2,
        )
    parts.append(
        figure(
            plots.curves_figure(series, "global accuracy per round", "round"),
            "global accuracy per round",
        )
    )
    rows = [
        [r["epoch"], r["val_accuracy"], r["val_loss"], r.get("train_loss"), r.get("epsilon")]
        for r in rounds
    ]
    columns = ["round", "global accuracy", "global loss", "client train loss", "client ε"]
    keep = [i for i, c in enumerate(columns) if any(row[i] is not None for row in rows)]
    parts.append(table([[row[i] for i in keep] for row in rows], [columns[i] for i in keep]))
    last = rounds[-1]
    local = {r["client"]: r for r in last.get("clients_evaluate", [])}
    client_rows = [
        [
            r["client"],
            settings.get("client_samples", [None] * (r["client"] + 1))[r["client"]],
            r.get("train_accuracy"),
            local.get(r["client"], {}).get("accuracy"),
        ]
        for r in last.get("clients_train", [])
    ]
    if client_rows:
        parts.append(f"<p>Clients in round {last['epoch']}:</p>")
        parts.append(
            table(
                client_rows,
                ["client", "samples", "local train accuracy", "global model on its own data"],
            )
        )
    if central:
        parts.append(
            note(
                f"centralised training of the same recipe: accuracy {central['accuracy']:.4f} on "
                f"its {central['split']} split ({central['run']})"
            )
        )
    return "".join(parts)


@section("privacy", "Differential privacy", 47)
def privacy(ctx: ReportContext) -> str | None:
    spent = ctx.meta.get("privacy")
    if not spent:
        return None
    budget = ctx.recipe.train.privacy
    epochs = [r for r in ctx.epochs if "epsilon" in r]
    parts = [
        f"<p>DP-SGD through Opacus: per-sample gradients clipped to {budget.max_grad_norm:g}, "
        f"Gaussian noise ×{spent['noise_multiplier']:.3f}, Poisson-sampled batches. Spent "
        f"ε = {spent['epsilon_spent']:.3f} of a budget of {budget.epsilon:g} at δ = {spent['delta']:g} "
        f"({escape(spent['accountant'])} accountant).</p>"
    ]
    if epochs:
        parts.append(
            figure(
                plots.curves_figure(
                    {"ε spent": ([r["epoch"] for r in epochs], [r["epsilon"] for r in epochs])},
                    "privacy spent",
                    "epoch",
                ),
                "privacy spent per epoch",
            )
        )
    return "".join(parts)
