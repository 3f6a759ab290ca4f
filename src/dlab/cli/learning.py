"""The learning commands: check (every from-scratch formula against PyTorch, or a learner's
own code), exercise (a formula to write) and lesson (read one, its answers, its notebook, its
figures)."""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dlab.cli.app import _console, app
from dlab.errors import DlabError


@app.command("check")
def check_formulas(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="formulas to check (default: all); with --impl: one exercise"),
    ] = None,
    list_only: Annotated[bool, typer.Option("--list", help="name the formulas and stop")] = False,
    impl: Annotated[
        Path | None,
        typer.Option(
            "--impl", help="check your own code: the file `dlab exercise NAME` wrote, filled in"
        ),
    ] = None,
) -> None:
    """Compare every from-scratch formula (NumPy) with PyTorch: forward, gradients, finite differences."""
    from dlab.scratch.checks import CHECKS, run_checks

    console = _console()
    if list_only:
        for name, (formula, _) in CHECKS.items():
            console.print(f"{name:22s} {formula}", markup=False)
        return
    if impl is not None:
        from dlab.exercises import check_implementation

        if len(names or []) != 1:
            raise DlabError(
                "check --impl: name one exercise, e.g. `dlab check conv2d --impl conv2d.py`"
            )
        results, whose = check_implementation(names[0], impl), impl.name
    else:
        results, whose = run_checks(names or []), "dlab.scratch"
    console.print(_check_table(results, whose, console.width))
    failed = [r for r in results if not r.passed]
    for r in failed:
        console.print(f"\n{r.name}: what differs", style="bold", markup=False)
        for problem in r.problems[:8]:
            for line in textwrap.wrap(problem, console.width - 2, subsequent_indent="    "):
                console.print(f"  {line}", markup=False)
        if len(r.problems) > 8:
            console.print(f"  … and {len(r.problems) - 8} more", markup=False)
    if failed:
        console.print(
            f"{len(failed)} of {len(results)} failed: {', '.join(r.name for r in failed)}"
        )
        raise typer.Exit(1)
    console.print(f"all {len(results)} formulas agree with PyTorch")


def _check_table(results: list[Any], whose: str, width: int) -> Table:
    """The checks' table; under 100 columns it drops the formula and the shapes tried, so
    that it fits an 80-column terminal (`dlab check --list` shows the formulas)."""
    from dlab.scratch.checks import FD_TOLERANCE, TOLERANCE

    wide = width >= 100
    table = Table(
        title=f"{whose} vs PyTorch (float64)",
        caption=f"pass: forward and gradient ≤ {TOLERANCE:g}, finite differences ≤ {FD_TOLERANCE:g}",
    )
    columns = ["formula", *(["", "shapes tried"] if wide else []), "forward", "gradient"]
    for column in [*columns, "finite diff.", "result"]:
        table.add_column(column, no_wrap=column in ("forward", "gradient", "result"))
    for r in results:
        table.add_row(
            r.name,
            *([r.formula, "; ".join(r.shapes)] if wide else []),
            *(
                "—" if math.isnan(v) else f"{v:.1e}"
                for v in (r.forward, r.gradient, r.finite_difference)
            ),
            "[green]pass[/green]" if r.passed else "[red]FAIL[/red]",
        )
    return table


@app.command()
def exercise(
    name: Annotated[str | None, typer.Argument(help="the exercise; none: list them")] = None,
    path: Annotated[
        Path | None, typer.Argument(help="the .py file or folder to write (default: ./NAME.py)")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="write over an existing file")] = False,
) -> None:
    """Write an exercise to solve: the functions' signatures, docstrings and TODOs. Then
    `dlab check NAME --impl NAME.py` grades your code against PyTorch."""
    from dlab.exercises import EXERCISES, write_exercise

    console = _console()
    if name is None:
        for e in EXERCISES.values():
            console.print(
                f"{e.name:14s} {', '.join(e.functions):46s} lesson {e.lesson}", markup=False
            )
        return
    written = write_exercise(name, path or Path(f"{name}.py"), force=force)
    console.print(
        f"wrote {written}; fill in the TODOs, then: dlab check {name} --impl {written}",
        markup=False,
    )


@app.command()
def lesson(
    name: Annotated[
        str | None, typer.Argument(help="lesson number or name; none: list them")
    ] = None,
    path: Annotated[
        Path | None,
        typer.Argument(
            help="with --notebook: the .ipynb file or folder (default: ./<lesson>.ipynb)"
        ),
    ] = None,
    notebook: Annotated[
        bool, typer.Option("--notebook", help="write the lesson as a Jupyter notebook")
    ] = False,
    answers: Annotated[
        bool, typer.Option("--answers", help="show the answers to the lesson's questions")
    ] = False,
    lang: Annotated[
        str | None,
        typer.Option("--lang", help="en or zh (中文); default: the locale's (LANG=zh_CN… → zh)"),
    ] = None,
    figures: Annotated[
        Path | None,
        typer.Option("--figures", help="write the lesson's figures to this folder as PNG files"),
    ] = None,
) -> None:
    """Read a lesson: the formula, the from-scratch code (from the source), PyTorch's equivalent, questions."""
    from dlab import lessons

    chosen = lessons.language(lang)
    console = _console()
    if name is None:
        for file in lessons.lesson_files():
            shown = lessons.translated(file, chosen)
            title = shown.read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
            console.print(f"{file.stem[:2]}  {title}", markup=False)
        return
    if path is not None and not notebook:
        raise DlabError(f"lesson: {path} is where --notebook writes; add --notebook")
    found = lessons.find(name, chosen)
    if figures is not None:
        from dlab.figures import write_figures

        written = write_figures(found, figures)
        if not written:
            raise DlabError(f"lesson {name}: it draws no figures (lessons 1, 3, 6, 9 and 11 do)")
        for path in written:
            console.print(f"wrote {path}", markup=False)
        return
    if notebook:
        written = lessons.write_notebook(found, path or Path(f"{found.stem}.ipynb"))
        console.print(f"wrote {written}  (jupyter lab {written})", markup=False)
        return
    if answers:
        found = lessons.answers(found)
        if not found.exists():
            raise DlabError(f"lesson {name}: its questions have no answers file yet")
    if sys.stdout.isatty():  # a terminal: rich Markdown, the math as Unicode
        console.print(lessons.for_terminal(found))
    else:  # piped: the Markdown itself, LaTeX included
        sys.stdout.write(lessons.render(found))
