"""The lessons, shipped inside the package (dlab/lessons): find them, and show them with their
code included from the source.

A fenced block whose info string is `python include="dlab.scratch.layers:linear_forward,linear_backward"`
is replaced by those functions' current source, so a lesson never shows stale code. Every other
```python block is executed, in order, by the test suite (tests/test_lessons.py).
"""

from __future__ import annotations

import importlib
import inspect
import re
from importlib import resources
from pathlib import Path
from typing import Any

from dlab.errors import DlabError, did_you_mean
from dlab.extras import require

INCLUDE = re.compile(r'^```python include="([\w.]+):([\w, ]+)"\n```$', re.MULTILINE)
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def lessons_dir() -> Path:
    """The lessons' folder inside the package: the same files in a checkout and in a wheel."""
    return Path(str(resources.files("dlab") / "lessons"))


def lesson_files() -> list[Path]:
    """The lessons in course order (their file names start with a number)."""
    return sorted(p for p in lessons_dir().glob("[0-9][0-9]-*.md"))


def find(name: str) -> Path:
    """A lesson by number (1 or 01), file stem or a word of its name."""
    files = lesson_files()
    for path in files:
        if name.isdigit() and int(name) == int(path.stem[:2]):
            return path
        if name in (path.stem, path.stem[3:]) or (
            len(name) > 2 and name in path.stem
        ):
            return path
    raise DlabError(
        f"lesson: none called '{name}'{did_you_mean(name, [p.stem[3:] for p in files])}; see `dlab lesson`"
    )


def source_of(module: str, names: str) -> str:
    """The current source of the named functions or classes of `module`."""
    imported = importlib.import_module(module)
    return "\n\n".join(
        inspect.getsource(getattr(imported, n.strip())).rstrip() for n in names.split(",")
    )


def render(path: Path) -> str:
    """The lesson's text with every include replaced by the code it names."""
    return INCLUDE.sub(
        lambda m: f"```python\n# from {m.group(1)}\n{source_of(m.group(1), m.group(2))}\n```",
        path.read_text(encoding="utf-8"),
    )


def code_blocks(path: Path) -> list[str]:
    """The lesson's executable ```python blocks, in order (includes are shown, not run)."""
    return BLOCK.findall(path.read_text(encoding="utf-8"))


def notebook(path: Path) -> Any:
    """The lesson as a Jupyter notebook (nbformat 4): its text as Markdown cells, every
    executable block as a code cell, in order; included source is shown in the Markdown, as
    `dlab lesson` shows it, and not run."""
    require("notebooks", "lesson --notebook", ("nbformat",))
    import nbformat.v4 as nbf

    text, cells, prose, at = path.read_text(encoding="utf-8"), [], [], 0
    for match in re.finditer(f"{INCLUDE.pattern}|{BLOCK.pattern}", text, re.MULTILINE | re.DOTALL):
        prose.append(text[at : match.start()])
        at = match.end()
        if match.group(1) is not None:  # an include: its current source, shown
            module, names = match.group(1), match.group(2)
            prose.append(f"```python\n# from {module}\n{source_of(module, names)}\n```")
            continue
        if "".join(prose).strip():
            cells.append(nbf.new_markdown_cell("".join(prose).strip()))
        prose = []
        cells.append(nbf.new_code_cell(match.group(3).rstrip("\n")))
    prose.append(text[at:])
    if "".join(prose).strip():
        cells.append(nbf.new_markdown_cell("".join(prose).strip()))
    for number, cell in enumerate(cells):  # ids by position: the same lesson, the same file
        cell["id"] = f"cell-{number}"
    book = nbf.new_notebook(cells=cells)
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    book.metadata["language_info"] = {"name": "python"}
    return book


def write_notebook(path: Path, target: Path) -> Path:
    """Write the lesson's notebook to `target`, a .ipynb file or a folder (made if missing,
    where it gets <lesson>.ipynb); its path."""
    import nbformat

    from dlab._io import atomic_write_text

    if target.is_dir() or target.suffix != ".ipynb":
        target.mkdir(parents=True, exist_ok=True)
        target = target / f"{path.stem}.ipynb"
    atomic_write_text(target, nbformat.writes(notebook(path)))
    return target


def includes(path: Path) -> list[tuple[str, str]]:
    """(module, names) of every include in the lesson."""
    return INCLUDE.findall(path.read_text(encoding="utf-8"))
