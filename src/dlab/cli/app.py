"""The `dlab` application, its sub-command groups, and what the command modules share."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from rich.console import Console


def _keep_argument_help() -> None:
    """Show arguments' help in `--help` again. Since click 8.3, `click.Argument.__init__` takes
    a `help` and sets `self.help` from it; typer < 0.21 (the newest Flower allows) sets its own
    `help` first and does not pass it on, so click resets it to None and every argument's help
    vanished. Pass it on, on the typer versions that do not."""
    original = typer.core.TyperArgument.__init__
    if getattr(original, "keeps_help", False):
        return

    def __init__(self: typer.core.TyperArgument, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if self.help is None and kwargs.get("help") is not None:
            self.help = kwargs["help"]

    __init__.keeps_help = True  # type: ignore[attr-defined]
    typer.core.TyperArgument.__init__ = __init__  # type: ignore[method-assign]


_keep_argument_help()
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
    """Rich's console: the terminal's width, or $COLUMNS when set (piped output too), else 160
    columns when piped (a log file need not wrap at 80)."""
    piped = not sys.stdout.isatty() and not os.environ.get("COLUMNS", "").isdigit()
    return Console(highlight=False, width=160 if piped else None)


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
