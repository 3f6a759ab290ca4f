"""Every lesson's code runs, every include resolves, every question's answer holds, and the
lessons read well in a terminal and in Chinese."""

from __future__ import annotations

import re

import pytest

from dlab.cli import main
from dlab.lessons import (
    BLOCK,
    answer_sections,
    answers,
    code_blocks,
    find,
    for_terminal,
    includes,
    lesson_files,
    lessons_dir,
    notebook,
    questions,
    readable_math,
    render,
    source_of,
    translated,
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


CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_every_lesson_has_a_chinese_version_with_the_same_code(path):
    chinese = translated(path, "zh")
    assert chinese != path and chinese.parent.name == "zh"
    assert code_blocks(chinese) == code_blocks(path), "the code is the English lesson's, verbatim"
    assert includes(chinese) == includes(path)
    assert len(questions(chinese)) == len(questions(path))
    text = chinese.read_text(encoding="utf-8")
    assert CJK.search(text.splitlines()[0]), "a Chinese title"
    for english in ("## From scratch", "## Questions", "Proof, live", "Answers:"):
        assert english not in text, f"untranslated: {english}"
    for material_term in ("递归神经网络", "变压器"):  # the glossary explains them; lessons avoid them
        assert material_term not in text


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_every_lessons_answers_are_in_chinese_with_the_same_code(path):
    """The Chinese answers hold the English answers' code verbatim (which the test above runs),
    one section per question, under Chinese headings and prose."""
    chinese = answers(translated(path, "zh"))
    assert chinese.parent == lessons_dir() / "zh" / "answers"
    english = answer_sections(path)
    sections = answer_sections(translated(path, "zh"))
    assert len(sections) == len(english) == len(questions(translated(path, "zh")))
    for mine, theirs in zip(sections, english, strict=True):
        assert BLOCK.findall(mine) == BLOCK.findall(theirs)
        assert CJK.search(BLOCK.sub("", mine)), "the prose is Chinese"
    text = chinese.read_text(encoding="utf-8")
    assert "## Question" not in text and ": answers" not in text
    assert CJK.search(text.splitlines()[0]) and text.splitlines()[0].endswith("：答案")


def test_the_glossary_maps_the_materials_own_terms():
    glossary = (lessons_dir() / "zh" / "glossary.md").read_text(encoding="utf-8")
    assert "| 递归神经网络 | 循环神经网络（RNN） |" in glossary
    assert "| 变压器 | Transformer（不译） |" in glossary
    for term in ("注意力机制", "长短期记忆网络", "门控循环单元", "批量规范化", "暂退法", "束搜索"):
        assert term in glossary


def test_dlab_lesson_in_chinese_by_flag_and_by_locale(capsys, monkeypatch):
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(variable, raising=False)
    assert main(["lesson", "8", "--lang", "zh"]) == 0
    assert capsys.readouterr().out.startswith("# 8. 循环神经网络")
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    assert main(["lesson", "8"]) == 0
    assert capsys.readouterr().out.startswith("# 8. 循环神经网络")
    assert main(["lesson", "8", "--lang", "en"]) == 0
    assert capsys.readouterr().out.startswith("# 8. Recurrent networks")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")  # LC_ALL outranks LANG
    assert main(["lesson", "8"]) == 0
    assert capsys.readouterr().out.startswith("# 8. Recurrent networks")
    assert main(["lesson", "--lang", "zh"]) == 0
    assert "23  23. 联邦学习与差分隐私" in capsys.readouterr().out
    assert main(["lesson", "8", "--lang", "fr"]) == 2
    assert "'fr' is not one of en, zh" in capsys.readouterr().err


def test_dlab_lesson_answers(capsys):
    assert main(["lesson", "15", "--answers"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# 15. The training loop and generalisation: answers")
    assert "## Question 3" in out and "patient.best_epoch == 9" in out
    assert main(["lesson", "15", "--answers", "--lang", "zh"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# 15. 训练循环与泛化：答案")
    assert "## 问题 3" in out and "patient.best_epoch == 9" in out


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_a_lesson_renders_in_a_terminal_with_readable_math(lang):
    from rich.console import Console

    console = Console(record=True, width=80, force_terminal=True, color_system="truecolor")
    console.print(for_terminal(find("4", lang)))
    shown = console.export_text()
    assert ("Back-propagation" if lang == "en" else "反向传播") in shown
    assert "∂L/∂x = ∂L/∂y ∂y/∂x" in shown  # the LaTeX as Unicode
    assert "\\frac" not in shown and "$$" not in shown
    assert "def numeric_gradient" in shown  # the included source, highlighted
    assert max(len(line) for line in shown.splitlines()) <= 80


def test_readable_math_keeps_the_grouping():
    assert readable_math("$\\frac{a + b}{c}$") == "(a + b)/c"
    assert readable_math("$e^{z - \\max z}$") == "e^(z - max z)"
    assert readable_math("```python\nx = '$a$'\n```") == "```python\nx = '$a$'\n```"  # code untouched


def test_every_figure_is_drawn_by_a_lesson_and_written_as_png(tmp_path, capsys):
    from dlab.figures import FIGURES, named_in, png

    drawn = [name for path in LESSONS for name in named_in(path)]
    assert sorted(drawn) == sorted(FIGURES), "each figure belongs to one lesson"
    for name in FIGURES:
        assert png(name).startswith(b"\x89PNG")
    assert main(["lesson", "9", "--figures", str(tmp_path)]) == 0
    assert (tmp_path / "lstm_cell.png").read_bytes().startswith(b"\x89PNG")
    assert f"wrote {tmp_path / 'lstm_cell.png'}" in capsys.readouterr().out
    assert main(["lesson", "4", "--figures", str(tmp_path)]) == 2
    assert "draws no figures" in capsys.readouterr().err
