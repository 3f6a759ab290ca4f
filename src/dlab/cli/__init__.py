"""The `dlab` command line: parses, calls one library function, prints. No logic of its own.

The commands live by theme: `commands.py` (train, evaluate, generate, predict, list, check,
report, lesson, demo), `groups.py` (runs, data, recipe) and `lifecycle.py` (tune, compress,
export, serve, federate).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from dlab.errors import DlabError

app = typer.Typer(
    name="dlab",
    help="A deep-learning lab: train, check, evaluate and explain the classic model families on real data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
runs_app = typer.Typer(help="Look at runs.", no_args_is_help=True)
data_app = typer.Typer(help="Get data sets onto this machine.", no_args_is_help=True)
recipe_app = typer.Typer(help="Look at recipes.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(data_app, name="data")
app.add_typer(recipe_app, name="recipe")


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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dlab` script: user errors become one line on stderr and exit code 2."""
    try:
        app(args=argv, prog_name="dlab")  # typer reports its own usage errors and exits 2
    except DlabError as exc:
        sys.stderr.write(f"dlab: error: {exc}\n")
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        sys.stderr.write("dlab: interrupted\n")
        return 130
    return 0


# the commands register themselves on `app` when their modules load
from dlab.cli import commands, groups, lifecycle  # noqa: E402, F401
