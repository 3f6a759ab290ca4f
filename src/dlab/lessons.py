"""The lessons, shipped inside the package (dlab/lessons): find them, and show them with their
code included from the source.

A fenced block whose info string is `python include="dlab.scratch.layers:linear_forward,linear_backward"`
is replaced by those functions' current source, so a lesson never shows stale code. Every other
```python block is executed, in order, by the test suite (tests/test_lessons.py).
"""

from __future__ import annotations

import importlib
import inspect
import os
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


LANGUAGES = {"en": "English", "zh": "中文"}


def language(requested: str | None = None) -> str:
    """The lessons' language: the one asked for, else the locale's (LC_ALL, LC_MESSAGES, LANG:
    zh_CN.UTF-8 and the like mean Chinese), else English."""
    if requested is not None:
        if requested not in LANGUAGES:
            raise DlabError(
                f"lesson --lang: '{requested}' is not one of {', '.join(LANGUAGES)}"
                f"{did_you_mean(requested, LANGUAGES)}"
            )
        return requested
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(variable, "")
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"


def translated(path: Path, lang: str) -> Path:
    """The lesson in `lang` (lessons/zh/<same name> for Chinese); the English one where there
    is no translation."""
    if lang == "en":
        return path
    version = lessons_dir() / lang / path.name
    return version if version.exists() else path


def find(name: str, lang: str = "en") -> Path:
    """A lesson by number (1 or 01), file stem or a word of its name, in `lang`."""
    files = lesson_files()
    for path in files:
        if name.isdigit() and int(name) == int(path.stem[:2]):
            return translated(path, lang)
        if name in (path.stem, path.stem[3:]) or (len(name) > 2 and name in path.stem):
            return translated(path, lang)
    raise DlabError(
        f"lesson: none called '{name}'{did_you_mean(name, [p.stem[3:] for p in files])}; see `dlab lesson`"
    )


MATH = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$", re.DOTALL)
FENCE = re.compile(r"^```.*?^```$", re.MULTILINE | re.DOTALL)


def _braced(text: str, start: int) -> int:
    """The index just past the brace group that opens at text[start] ('{')."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    return len(text)


def _grouped(latex: str) -> str:
    """LaTeX whose fractions, exponents and indices keep their grouping once the braces go:
    \\frac{a + b}{c} -> (a + b)/c, e^{z - m} -> e^(z - m), x_{ij} -> x_(ij)."""

    def shown(group: str) -> str:
        inner = _grouped(group[1:-1])
        return inner if re.fullmatch(r"(\\\w+\s*)?\w+|.", inner.strip()) else f"({inner})"

    latex = re.sub(r"\\(max|min|log|exp|sin|cos|tanh)\b", r"\1", latex)  # keep the space after

    out, i = [], 0
    while i < len(latex):
        if latex.startswith("\\frac{", i):
            first_end = _braced(latex, i + 5)
            second_end = (
                _braced(latex, first_end) if latex[first_end : first_end + 1] == "{" else first_end
            )
            numerator, denominator = latex[i + 5 : first_end], latex[first_end:second_end]
            out.append(f"{shown(numerator)}/{shown(denominator) if denominator else ''}")
            i = second_end
        elif latex[i] in "^_" and latex[i + 1 : i + 2] == "{":
            end = _braced(latex, i + 1)
            out.append(latex[i] + shown(latex[i + 1 : end]))
            i = end
        else:
            out.append(latex[i])
            i += 1
    return "".join(out)


def readable_math(text: str) -> str:
    """The lesson's LaTeX ($…$, $$…$$) as Unicode a terminal shows (∂L/∂x, ∑_j, √(d_k));
    code blocks are left as they are."""
    from pylatexenc.latex2text import LatexNodes2Text

    converter = LatexNodes2Text(math_mode="text")

    def convert(match: re.Match[str]) -> str:
        display, inline = match.group(1), match.group(2)
        shown = " ".join(converter.latex_to_text(_grouped(display or inline)).split())
        return f"\n    {shown}\n" if display else shown

    parts, at = [], 0
    for fence in FENCE.finditer(text):
        parts += [MATH.sub(convert, text[at : fence.start()]), fence.group(0)]
        at = fence.end()
    return "".join([*parts, MATH.sub(convert, text[at:])])


QUESTIONS = re.compile(r"^## (?:Questions|思考题)\n(.*?)(?=^## |\Z)", re.MULTILINE | re.DOTALL)


def questions(path: Path) -> list[str]:
    """The numbered questions that end a lesson (`## Questions` or `## 思考题`, then `1. …`)."""
    found = QUESTIONS.search(path.read_text(encoding="utf-8"))
    return re.findall(r"^\d+\. (.+)$", found.group(1), re.MULTILINE) if found else []


def answers(path: Path) -> Path:
    """The lesson's answers, in the lesson's language: lessons/answers/<the lesson's file name>,
    or lessons/zh/answers/<…> for a Chinese lesson (the English answers where untranslated)."""
    if path.parent != lessons_dir():  # a translation: lessons/<lang>/
        translation = path.parent / "answers" / path.name
        if translation.exists():
            return translation
    return lessons_dir() / "answers" / path.name


def answer_sections(path: Path) -> list[str]:
    """The text of each `## Question N` (`## 问题 N`) section of the lesson's answers, in order."""
    text = answers(path).read_text(encoding="utf-8")
    return re.split(r"^## (?:Question|问题) \d+\n", text, flags=re.MULTILINE)[1:]


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


def for_terminal(path: Path) -> Any:
    """The lesson as rich Markdown: headings, code highlighted, the math as Unicode."""
    from rich.markdown import Markdown

    return Markdown(readable_math(render(path)), code_theme="monokai")


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
    book.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
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
