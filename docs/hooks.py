"""MkDocs hook: the pages that are generated from the code, so the site never drifts from it.

- the guide (README.md), the changelog and the Chinese quick start, as they are in the repository;
- the lessons, rendered with their from-scratch code included from the source (`dlab lesson`),
  in English and Chinese, with their answers and the glossary;
- the recipe reference from the pydantic schema and every registered component's config class
  (the same source as `dlab recipe doc`);
- the CLI reference from the Typer application's own commands and parameters;
- the benchmark tables from the newest results file of each suite.

Nothing is written into docs/: the pages are added to the build as generated files.
"""

from __future__ import annotations

import html
import importlib.util
import json
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]

# repository links in the guide -> the site's pages
LINKS = {
    "(CHANGELOG.md)": "(changelog.md)",
    "(README.zh.md)": "(zh/index.md)",
    "(src/dlab/lessons/zh/glossary.md)": "(lessons/zh/glossary.md)",
    "(src/dlab/lessons/README.zh.md)": "(lessons/zh.md)",
}
# the same links from the Chinese quick start, one folder down
ZH_LINKS = {"(README.md)": "(../index.md)"} | {
    old: f"(../{new[1:]}" for old, new in LINKS.items() if old.startswith("(src/")
}


def on_files(files: Any, config: Any) -> Any:
    for uri, content in pages().items():
        files.append(File.generated(config, uri, content=content))
    from dlab.figures import FIGURES, png

    for name in FIGURES:  # the lessons' figures, drawn now by the code that draws them
        files.append(File.generated(config, f"lessons/figures/{name}.png", content=png(name)))
    return files


def _with_figures(markdown: str, folder: str) -> str:
    """The lesson page with each figure shown below the code block that draws it."""
    import re

    from dlab.figures import DRAWN

    def shown(block: re.Match[str]) -> str:
        names = DRAWN.findall(block.group(0))
        return block.group(0) + "".join(f"\n\n![{n}]({folder}{n}.png)" for n in names)

    return re.sub(r"^```python\n.*?^```$", shown, markdown, flags=re.MULTILINE | re.DOTALL)


def pages() -> dict[str, str]:
    from dlab.lessons import answers, lesson_files, lessons_dir, render, translated

    guide = _linked((ROOT / "README.md").read_text(encoding="utf-8"), LINKS)
    made = {
        "index.md": guide,
        "changelog.md": (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"),
        "zh/index.md": _linked((ROOT / "README.zh.md").read_text(encoding="utf-8"), ZH_LINKS),
        "lessons/index.md": (lessons_dir() / "README.md").read_text(encoding="utf-8"),
        "lessons/zh.md": (lessons_dir() / "README.zh.md").read_text(encoding="utf-8"),
        "reference/recipe.md": recipe_reference(),
        "reference/cli.md": cli_reference(),
        "benchmarks.md": benchmark_tables(),
    }
    made.update(
        {f"lessons/{path.name}": _with_figures(render(path), "figures/") for path in lesson_files()}
    )
    made.update(
        {
            f"lessons/zh/{path.name}": _with_figures(render(translated(path, "zh")), "../figures/")
            for path in lesson_files()
        }
    )
    made.update({f"lessons/answers/{path.name}": render(answers(path)) for path in lesson_files()})
    made.update(
        {
            f"lessons/zh/answers/{path.name}": render(answers(translated(path, "zh")))
            for path in lesson_files()
        }
    )
    made["lessons/zh/glossary.md"] = (lessons_dir() / "zh" / "glossary.md").read_text(
        encoding="utf-8"
    )
    return made


def _linked(text: str, links: dict[str, str]) -> str:
    """`text` with its repository links pointed at the site's pages."""
    for old, new in links.items():
        text = text.replace(old, new)
    return text


def _cell(text: Any) -> str:
    # a table cell of plain text: brackets are not links, <run> no tag, bars no columns
    escaped = html.escape(str(text), quote=False).replace("[", "\\[")
    return escaped.replace("|", "\\|").replace("\n", " ")


def _code(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _field_table(rows: list[tuple[str, str, str]] | list[list[str]]) -> str:
    lines = ["| field | default | meaning |", "| --- | --- | --- |"]
    lines += [
        f"| `{name}` | `{_code(default)}` | {_cell(meaning)} |" for name, default, meaning in rows
    ]
    return "\n".join(lines)


def recipe_reference() -> str:
    from dlab.catalog import recipe_fields
    from dlab.recipe import field_docs
    from dlab.registry import DATASETS, LOSSES, MODELS, OPTIMIZERS, SCHEDULERS

    parts = [
        "# Recipe reference",
        "",
        "Every field of a recipe, its default and its meaning, generated from the schema (the "
        "same source as `dlab recipe doc`). A component (data set, model, optimizer, loss, "
        "schedule) adds the fields of its own config class, listed below it.",
        "",
        "## The recipe and its train section",
        "",
        _field_table(recipe_fields(None)),
    ]
    for title, section, registry in (
        ("Data sets", "data", DATASETS),
        ("Models", "model", MODELS),
        ("Optimizers", "train.optimizer", OPTIMIZERS),
        ("Losses", "train.loss", LOSSES),
        ("Learning-rate schedules", "train.scheduler", SCHEDULERS),
    ):
        parts += ["", f"## {title} (`{section}.name`)"]
        for entry in registry:
            rows = [r for r in field_docs(entry.config) if r[0] != "name"]
            parts += ["", f"### `{entry.name}`", "", _cell(entry.summary) or ""]
            parts += ["", _field_table(rows) if rows else "No settings besides its name."]
    return "\n".join(parts) + "\n"


def cli_reference() -> str:
    import click
    import typer

    from dlab.cli import app

    root = typer.main.get_command(app)
    parts = ["# Command-line reference", "", "Generated from the `dlab` application itself."]

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            for name in sorted(command.commands):
                walk(command.commands[name], [*path, name])
            return
        usage = " ".join(
            [
                "dlab",
                *path,
                *(p.name.upper() for p in command.params if isinstance(p, click.Argument)),
            ]
        )
        parts.extend(
            [
                "",
                f"## `dlab {' '.join(path)}`",
                "",
                (command.help or "").strip(),
                "",
                f"    {usage}",
            ]
        )
        rows = []
        for param in command.params:
            if param.name == "help":
                continue
            names = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
            if isinstance(param, click.Argument):
                names = f"`{param.name.upper()}`"
            default = "" if param.default is None or param.required else f"`{_code(param.default)}`"
            rows.append(f"| {names} | {default} | {_cell(getattr(param, 'help', '') or '')} |")
        if rows:
            parts.extend(
                ["", "| argument or option | default | meaning |", "| --- | --- | --- |", *rows]
            )

    walk(root, [])
    return "\n".join(parts) + "\n"


def benchmark_tables() -> str:
    # by its file: Opacus installs a package also named `benchmarks` into site-packages
    spec = importlib.util.spec_from_file_location(
        "_bench_common", ROOT / "benchmarks" / "common.py"
    )
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    markdown_table = common.markdown_table

    provenance = {
        "commit",
        "date",
        "torch",
        "threads",
        "omp_num_threads",
        "omp_wait_policy",
        "device",
    }
    newest: dict[str, Path] = {}
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        newest[json.loads(path.read_text())["suite"]] = path  # names sort by date
    parts = [
        "# Benchmark results",
        "",
        "The newest results file of each suite in `benchmarks/results` (`python -m benchmarks "
        "SUITE` writes them; every row carries its commit, date, torch and thread policy). The "
        "README explains what each suite measures and against which baseline.",
    ]
    for suite, path in sorted(newest.items()):
        data = json.loads(path.read_text())
        rows = data["rows"]
        columns = [c for c in dict.fromkeys(k for r in rows for k in r) if c not in provenance]
        hardware = data.get("hardware", {})
        where = ", ".join(f"{k} {hardware[k]}" for k in ("cpu", "cores", "torch") if k in hardware)
        commits = sorted({str(r.get("commit", "?")) for r in rows})
        parts += [
            "",
            f"## {suite}",
            "",
            f"`{path.name}`: {where}; commit {', '.join(commits)}.",
            "",
        ]
        parts.append(markdown_table(rows, columns).replace("\n|", "\n|"))
    return "\n".join(parts) + "\n"
