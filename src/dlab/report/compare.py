"""`dlab runs compare A B …`: curves overlaid, final metrics side by side, and only the recipe fields that differ."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dlab._io import atomic_write_text
from dlab.errors import DlabError
from dlab.recipe import flatten
from dlab.report import plots
from dlab.report.html import figure, note, page, table


def differences(runs: list[Any]) -> list[list[Any]]:
    """Rows (field, value per run) for recipe fields whose values differ between runs."""
    flat = [flatten(r.recipe.to_dict()) for r in runs]
    keys = sorted(set().union(*flat))
    return [
        [key, *(f.get(key, "—") for f in flat)]
        for key in keys
        if len({repr(f.get(key, "—")) for f in flat}) > 1 and key != "name"
    ]


def final_metrics(runs: list[Any]) -> tuple[list[str], list[list[Any]]]:
    """The last epoch's metrics and every evaluation headline, one row per run."""
    rows, names = [], []
    for run in runs:
        values: dict[str, Any] = {}
        last = (run.dir.epochs() or [{}])[-1]
        values.update(
            {
                k: v
                for k, v in last.items()
                if k not in ("kind", "step", "time_s", "elapsed_s") and isinstance(v, int | float)
            }
        )
        for split, report in (run.dir.meta.get("evaluation") or {}).items():
            values.update(
                {
                    f"{split}_{k}": v
                    for k, v in report.items()
                    if isinstance(v, int | float) and k != "samples"
                }
            )
        rows.append(values)
        names = names + [k for k in values if k not in names]
    return names, [[r.get(n, "—") for n in names] for r in rows]


def _curve_figures(runs: list[Any], labels: list[str]) -> list[str]:
    """One figure per epoch metric, a line per run."""
    epochs = [r.dir.epochs() for r in runs]
    metrics = sorted(
        {
            k
            for records in epochs
            for e in records
            for k in e
            if k.startswith(("train_", "val_")) and isinstance(e[k], int | float)
        }
    )
    figures = []
    for metric in metrics:
        series = {
            label: (
                [e["epoch"] for e in records if metric in e],
                [e[metric] for e in records if metric in e],
            )
            for label, records in zip(labels, epochs, strict=True)
        }
        series = {k: v for k, v in series.items() if v[0]}
        if series:
            figures.append(
                figure(plots.curves_figure(series, metric.replace("_", " "), "epoch"), metric)
            )
    return figures


def compare_runs(runs: list[Any], output: Path) -> tuple[Path, list[str], list[list[Any]]]:
    """Write a comparison page; return it with the metrics table (columns, rows) for printing."""
    if len(runs) < 2:
        raise DlabError("runs compare: give at least two run directories")
    labels = [f"{r.recipe.name}/{r.path.name}" for r in runs]
    figures = _curve_figures(runs, labels)
    columns, rows = final_metrics(runs)
    metric_table = table(
        [[label, *row] for label, row in zip(labels, rows, strict=True)], ["run", *columns]
    )
    diff = differences(runs)
    sections = [
        (
            "curves",
            "Curves",
            '<div class="row">' + "".join(figures) + "</div>"
            if figures
            else note("no epoch metrics to plot"),
        ),
        ("metrics", "Final metrics", metric_table),
        (
            "differences",
            "Recipe differences",
            table(diff, ["field", *labels])
            if diff
            else note("the recipes are identical (only the seed of chance differs)"),
        ),
    ]
    atomic_write_text(
        output,
        page(
            "dlab: run comparison",
            f"{len(runs)} runs — {time.strftime('%Y-%m-%d %H:%M')}",
            sections,
        ),
    )
    return (
        output,
        ["run", *columns],
        [[label, *row] for label, row in zip(labels, rows, strict=True)],
    )
