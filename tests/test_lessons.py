"""Every lesson's code runs, every include resolves, every exercise's answer holds."""

from __future__ import annotations

import pytest

from dlab.cli import main
from dlab.lessons import code_blocks, includes, lesson_files, render, source_of

LESSONS = lesson_files()


def test_fourteen_lessons_in_course_order():
    stems = [p.stem[3:] for p in LESSONS]
    assert len(LESSONS) == 14
    assert stems[0] == "linear-and-activation" and stems[-1] == "autoencoders-vae"
    assert (
        stems.index("backpropagation")
        < stems.index("mlp")
        < stems.index("convolution-and-pooling")
        < stems.index("attention")
    )


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_code_runs_and_exercise_answers_hold(path):
    blocks = code_blocks(path)
    assert len(blocks) >= 2, "a lesson has its comparison and its exercise"
    assert "assert" in blocks[-1], "the exercise's answer is checked"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(path), "exec"), namespace)


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_includes_resolve_to_current_source(path):
    for module, names in includes(path):
        assert "def " in source_of(module, names)
    text = render(path)
    assert 'include="' not in text and text.startswith("# ")


def test_dlab_lesson_cli(capsys):
    assert main(["lesson"]) == 0
    assert "13  13. GPT" in capsys.readouterr().out
    assert main(["lesson", "attention"]) == 0
    out = capsys.readouterr().out
    assert "def attention_forward" in out and "# from dlab.scratch.attention" in out
    assert main(["lesson", "atention"]) == 2
