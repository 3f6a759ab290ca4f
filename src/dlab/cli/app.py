"""The `dlab` application, its sub-command groups, and what the command modules share."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

app = typer.Typer(
    name="dlab",
    help="A deep-learning lab: train, check, evaluate and explain the classic model families on real data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
runs_app = typer.Typer(help="Look at runs.", no_args_is_help=True)
data_app = typer.Typer(help="Get data sets onto this machine.", no_args_is_help=True)
recipe_app = typer.Typer(help="Look at recipes, and copy one to edit.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(data_app, name="data")
app.add_typer(recipe_app, name="recipe")


def _version(show: bool) -> None:
    if show:
        from dlab import __version__
        from dlab.extras import DISTRIBUTION

        typer.echo(f"dlab {__version__} ({DISTRIBUTION})")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """A deep-learning lab: train, check, evaluate and explain the classic model families on real data."""


def _console() -> Console:
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


Overrides = Annotated[
    list[str] | None,
    typer.Option("-o", "--override", help="override a recipe field: -o train.optimizer.lr=0.01"),
]
RunsDir = Annotated[
    Path | None,
    typer.Option("--runs-dir", help="where runs are stored (default: $DLAB_RUNS_DIR or ./runs)"),
]


def _print_run_summary(run: Any) -> None:
    from dlab.tasks import task_of

    meta, task = run.dir.meta, task_of(run.meta)
    parts = [f"run {run.path}"]
    for split, report in (meta.get("evaluation") or {}).items():
        shown = task.headline_of(report)
        parts.append(f"{split}: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
    parts.append(
        f"{meta.get('train_seconds', 0):.1f}s, {meta.get('samples_per_s', 0):,.0f} samples/s"
    )
    if meta.get("stop_reason") and meta["stop_reason"] != "completed":
        parts.append(meta["stop_reason"])
    _console().print("  ".join(parts), soft_wrap=True)


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"
