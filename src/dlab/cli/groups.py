"""The command groups: `dlab runs`, `dlab data` and `dlab recipe`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dlab.cli.app import (
    Overrides,
    RunsDir,
    _console,
    _number,
    data_app,
    recipe_app,
    runs_app,
)


@runs_app.command("list")
def runs_list(runs_dir: RunsDir = None) -> None:
    """Every run with its status and accuracy."""
    from dlab.runs import list_runs, runs_root

    runs = list(list_runs(runs_dir))
    if not runs:
        _console().print(f"no runs in {runs_root(runs_dir)} yet; try `dlab train demo`")
        return
    table = Table(title=f"runs in {runs_root(runs_dir)}")
    for column in ("run", "model", "data", "status", "epochs", "val acc", "test acc", "created"):
        table.add_column(column)
    for run in runs:
        s = run.summary()
        table.add_row(
            s["run"],
            s["model"],
            s["data"],
            s["status"],
            str(s["epochs"]),
            _number(s["val_accuracy"]),
            _number(s["test_accuracy"]),
            s["created"][:19],
        )
    _console().print(table)


@runs_app.command("compare")
def runs_compare(
    runs: Annotated[list[Path], typer.Argument(help="two or more run directories")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="where to write the comparison page")
    ] = Path("compare.html"),
) -> None:
    """Overlay the curves of several runs, and tabulate their final metrics and recipe differences."""
    from dlab.api import load
    from dlab.report import compare_runs

    path, columns, rows = compare_runs([load(r) for r in runs], output)
    table = Table(title="final metrics")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[_number(v) if isinstance(v, float) else str(v) for v in row])
    _console().print(table)
    _console().print(f"wrote {path}")


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="data set name, e.g. mnist")],
    mirror: Annotated[
        list[str] | None,
        typer.Option("--mirror", help="base URL to download from instead of the canonical mirrors"),
    ] = None,
) -> None:
    """Download a data set's files, verify their checksums, and put them in the data directory."""
    from dlab.catalog import fetch_dataset

    folder = fetch_dataset(name, mirror or None, console=_console())
    _console().print(f"{name}: verified files in {folder}")


@data_app.command("import")
def data_import(
    name: Annotated[str, typer.Argument(help="data set name, e.g. mnist")],
    source: Annotated[Path, typer.Argument(help="folder holding the data set's published files")],
) -> None:
    """Copy a data set's files from a folder into the data directory, verifying checksums."""
    from dlab.catalog import import_dataset

    folder = import_dataset(name, source)
    _console().print(f"{name}: verified and copied into {folder}")


@recipe_app.command("show")
def recipe_show(
    recipe: Annotated[str, typer.Argument(help="recipe file or name")], override: Overrides = None
) -> None:
    """Print the resolved recipe (every default filled in, overrides applied)."""
    from dlab.recipe import load_recipe

    sys.stdout.write(load_recipe(recipe, override or []).to_yaml())


@recipe_app.command("copy")
def recipe_copy(
    recipe: Annotated[str, typer.Argument(help="a shipped recipe's name (or a recipe file)")],
    folder: Annotated[
        Path, typer.Argument(help="where to write it (./recipes is searched first by name)")
    ] = Path("recipes"),
    force: Annotated[bool, typer.Option(help="replace a copy that is already there")] = False,
) -> None:
    """Write an editable copy of a recipe, comments included."""
    from dlab.recipe.loading import copy_recipe

    target = copy_recipe(recipe, folder, force)
    console = _console()
    console.print(f"wrote {target}")
    if target.parent.resolve() == (Path.cwd() / "recipes").resolve():
        console.print(f"`dlab train {target.stem}` in this folder now trains your copy")
    else:
        console.print(f"train it with `dlab train {target}`")


@recipe_app.command("doc")
def recipe_doc(
    recipe: Annotated[
        str | None, typer.Argument(help="recipe whose components to document")
    ] = None,
) -> None:
    """Every recipe field with its default and meaning."""
    from dlab.catalog import recipe_fields

    table = Table()
    for column in ("field", "default", "meaning"):
        table.add_column(column)
    for row in recipe_fields(recipe):
        table.add_row(*row)
    _console().print(table)
