"""The documentation site builds with `mkdocs build --strict` (no broken link or reference), and
its generated pages hold what the code holds: every lesson, recipe field, component and command."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from conftest import ROOT

from dlab.cli import app
from dlab.lessons import lesson_files
from dlab.registry import MODELS


def _text(page: Path) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.read_text())))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    mkdocs = Path(sys.executable).parent / "mkdocs"
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_every_lesson_has_its_page_with_the_included_source(site):
    for lesson in lesson_files():
        page = _text(site / "lessons" / lesson.stem / "index.html")
        assert page.split(" ¶")[0].strip().endswith(lesson.read_text().splitlines()[0][2:])
    first = _text(site / "lessons" / "01-linear-and-activation" / "index.html")
    assert "def linear_forward" in first and "# from dlab.scratch.layers" in first


def test_the_recipe_reference_lists_every_field_and_component(site):
    page = _text(site / "reference" / "recipe" / "index.html")
    for field in ("train.loggers", "train.mlflow", "train.grad_clip", "seed"):
        assert field in page
    assert "tensorboard (<run>/tb)" in page  # plain text, not swallowed as a tag
    for name in MODELS.names():
        assert f" {name} " in page


def test_the_cli_reference_lists_every_command(site):
    page = _text(site / "reference" / "cli" / "index.html")
    root = typer.main.get_command(app)

    def leaves(group, path):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from leaves(command, [*path, name])
            else:
                yield " ".join([*path, name])

    commands = list(leaves(root, []))
    assert "recipe copy" in commands and len(commands) > 20
    for command in commands:
        assert f"dlab {command} ¶" in page or f"dlab {command}" in page


def test_the_guide_api_chinese_quick_start_and_benchmarks_are_pages(site):
    assert "dlab-toolkit" in _text(site / "index.html")
    api = _text(site / "reference" / "api" / "index.html")
    assert "Train a recipe into a new run directory" in api  # dlab.api.train's docstring
    assert "A trained (or training) run, opened from its directory" in api  # dlab.api.Run's
    assert "六个步骤" in _text(site / "zh" / "index.html")
    bench = _text(site / "benchmarks" / "index.html")
    assert "inference" in bench and "speedup_vs_eager" in bench
