"""Every lesson's code runs, every include resolves, every question's answer holds, and the
lessons read well in a terminal and in Chinese."""

from __future__ import annotations

import pytest

from dlab.cli import main
from dlab.lessons import (
    BLOCK,
    answer_sections,
    answers,
    code_blocks,
    includes,
    lesson_files,
    notebook,
    questions,
    render,
    source_of,
)

LESSONS = lesson_files()
# the first hour trains four small CNNs (about 30 s): its code runs once, in its notebook's test
QUICK = [p for p in LESSONS if p.stem != "00-first-hour"]


def test_twenty_four_lessons_in_course_order():
    stems = [p.stem[3:] for p in LESSONS]
    assert len(LESSONS) == 24
    assert stems[:2] == ["first-hour", "linear-and-activation"] and stems[-1] == "federated-and-private"
    assert (
        stems.index("backpropagation")
        < stems.index("mlp")
        < stems.index("convolution-and-pooling")
        < stems.index("attention")
    )


@pytest.mark.parametrize("path", QUICK, ids=lambda p: p.stem)
def test_lesson_code_runs_and_its_answers_hold(path):
    """The lesson's blocks, then its answers' blocks, in one namespace (as a learner who read
    the lesson and then the answers); every question has an answer that asserts something."""
    asked = questions(path)
    assert 2 <= len(asked) <= 3, "a lesson ends with two or three questions"
    assert f"`dlab lesson {int(path.stem[:2])} --answers`" in path.read_text()
    sections = answer_sections(path)
    assert len(sections) == len(asked), "one answer per question"
    namespace: dict = {}
    for block in code_blocks(path):
        exec(compile(block, str(path), "exec"), namespace)
    for number, section in enumerate(sections, 1):
        (code,) = BLOCK.findall(section)
        assert "assert" in code, f"question {number}'s answer checks itself"
        exec(compile(code, f"{answers(path)} (question {number})", "exec"), namespace)


def test_answers_are_out_of_the_lessons():
    for path in LESSONS:
        text = path.read_text(encoding="utf-8")
        assert "# answer:" not in text and "## Questions" in text, path.name
        assert answers(path).exists(), path.name


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


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_a_lessons_notebook_holds_its_code_to_run_and_its_included_source_to_read(path):
    import nbformat

    book = notebook(path)
    nbformat.validate(book)
    code = [c.source for c in book.cells if c.cell_type == "code"]
    assert code == [block.rstrip("\n") for block in code_blocks(path)]
    prose = "\n".join(c.source for c in book.cells if c.cell_type == "markdown")
    assert prose.startswith("# ") and 'include="' not in prose
    for module, names in includes(path):
        assert f"# from {module}" in prose and source_of(module, names) in prose  # shown...
        assert not any(source_of(module, names) in c for c in code)  # ...not run


def test_dlab_lesson_writes_a_notebook(tmp_path, capsys):
    import nbformat

    assert main(["lesson", "1", "--notebook", str(tmp_path / "books")]) == 0
    written = tmp_path / "books" / "01-linear-and-activation.ipynb"
    assert f"wrote {written}" in capsys.readouterr().out
    assert nbformat.read(written, as_version=4) == notebook(LESSONS[1])
    assert main(["lesson", "1", str(tmp_path / "x.ipynb")]) == 2  # a path needs --notebook
    assert "add --notebook" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_every_lessons_notebook_executes_in_a_jupyter_kernel(path, tmp_path, monkeypatch):
    """Executed as a learner would run it (nbclient, a python3 kernel, matplotlib inline), so
    a notebook can never rot; the first hour's plots must come out as images. Its answers run
    after it (the first hour's only run here)."""
    from nbclient import NotebookClient

    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend
    import nbformat.v4 as nbf

    book = notebook(path)
    for section in answer_sections(path):  # and then the answers, as a learner would paste them
        book.cells.append(nbf.new_code_cell(BLOCK.findall(section)[0]))
    NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}).execute()
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    if path.stem == "00-first-hour":
        images = [o for o in outputs if "image/png" in o.get("data", {})]
        assert len(images) >= 3  # the digits, the curves, the confusion matrix
        printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
        assert "test accuracy 0.9" in printed and "largest difference to PyTorch" in printed
