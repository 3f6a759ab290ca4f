"""Every lesson's code runs, every include resolves, every exercise's answer holds."""

from __future__ import annotations

import pytest

from dlab.cli import main
from dlab.lessons import code_blocks, includes, lesson_files, notebook, render, source_of

LESSONS = lesson_files()
# the first hour trains four small CNNs (about 30 s): its code runs once, in its notebook's test
QUICK = [p for p in LESSONS if p.stem != "00-first-hour"]


def test_fifteen_lessons_in_course_order():
    stems = [p.stem[3:] for p in LESSONS]
    assert len(LESSONS) == 15
    assert stems[:2] == ["first-hour", "linear-and-activation"] and stems[-1] == "autoencoders-vae"
    assert (
        stems.index("backpropagation")
        < stems.index("mlp")
        < stems.index("convolution-and-pooling")
        < stems.index("attention")
    )


@pytest.mark.parametrize("path", QUICK, ids=lambda p: p.stem)
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
    a notebook can never rot; the first hour's plots must come out as images."""
    from nbclient import NotebookClient

    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend
    book = notebook(path)
    NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}).execute()
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    if path.stem == "00-first-hour":
        images = [o for o in outputs if "image/png" in o.get("data", {})]
        assert len(images) >= 3  # the digits, the curves, the confusion matrix
        printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
        assert "test accuracy 0.9" in printed and "largest difference to PyTorch" in printed
