"""Report sections, registered by name and order; each decides whether it applies to a run.

A section is a function (ReportContext) -> HTML fragment, or None when it does not apply. The
sections here apply to any run (summary, curves, attention maps); tuning, compression, federated
and private runs add theirs in `report/lifecycle.py`, and each task brings its own results
sections (`Task.report_sections`, in dlab/tasks/).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


def _step_figures(steps: list[dict]) -> list[str]:
    """Training loss, learning rate and (where logged) gradient norm per step."""

    def per_step(key: str, records: list[dict], title: str, log_y: bool = False) -> str:
        series = {key: ([r["step"] for r in records], [r[key] for r in records])}
        return figure(plots.curves_figure(series, title, "step", log_y=log_y), title)

    figures = [
        per_step("loss", steps, "training loss per step"),
        per_step("lr", steps, "learning rate"),
    ]
    norms = [r for r in steps if "grad_norm" in r]
    if norms:
        figures.append(per_step("grad_norm", norms, "gradient norm", log_y=True))
    return figures


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
        figures += _step_figures(steps)
    elif epochs:
        parts.append(
            note("the run was shorter than one log interval (train.log_every): no per-step curves")
        )
    return "".join(parts) + '<div class="row">' + "".join(figures) + "</div>"


@section("attention", "Attention maps", 35)
def attention_maps(ctx: ReportContext) -> str | None:
    from dlab.models.attention import MultiHeadAttention

    if not any(isinstance(m, MultiHeadAttention) for m in ctx.model.modules()):
        return None
    from dlab.report.explain import attention_weights

    x, _ = next(ctx.bundle.loader(ctx.split).epoch(0))
    first = tuple(t[:1] for t in x) if isinstance(x, tuple) else x[:1]
    tokens_source = first[0] if isinstance(first, tuple) else first
    tokenizer = ctx.run.tokenizer
    pad = (tokenizer.pad_id if tokenizer else None) or 0
    keep_pad = ctx.task is not None and not ctx.task.padded_inputs  # a text stream: 0 is a symbol
    ids = [int(i) for i in tokens_source[0] if keep_pad or int(i) != pad][:48]
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
