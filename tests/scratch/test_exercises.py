"""`dlab exercise` and `dlab check NAME --impl`: every stub fails until written, every solution
passes, and a planted bug in each is reported by the gradient (or step) it breaks — and only by
that one where the bug is local."""

from __future__ import annotations

import ast
import math

import numpy as np
import pytest

from dlab.cli import main
from dlab.errors import DlabError
from dlab.exercises import (
    EXERCISES,
    check_implementation,
    exercise_file,
    load_implementation,
    substituted,
    write_exercise,
)
from dlab.scratch import layers
from dlab.scratch.checks import CHECKS
from dlab.scratch.gradcheck import relative_error

pytestmark = pytest.mark.unit

# exercise -> (text of the solution, the bug put in its place, what the report must name,
#              what it must not name: the gradients the bug leaves right)
BUGS = {
    "linear": (
        "flat_dz.sum(0) if has_bias",
        "flat_dz.mean(0) if has_bias",
        "∂L/∂b",
        ("∂L/∂w", "∂L/∂x", "output"),
    ),
    "sigmoid": ("return dy * y * (1 - y)", "return dy * (1 - y)", "∂L/∂x", ("output",)),
    "softmax": (
        "return y * (dy - (dy * y).sum(axis=axis, keepdims=True))",
        "return y * dy",
        "∂L/∂z",
        ("output",),
    ),
    "cross_entropy": ("(np.exp(log_p) - q) / len(q)", "(np.exp(log_p) - q)", "∂L/∂z", ("output",)),
    "sgd": (
        "g = g + momentum * buffer if nesterov else buffer",
        "g = buffer",
        "nesterov=True] θ after step 1",
        ("momentum=0.9, weight_decay",),
    ),
    "adam": ("np.sqrt(1 - beta2**step)", "np.sqrt(1 - beta1**step)", "θ after step 1", ()),
    "conv2d": (
        'np.einsum("nfp,nkp->fk", flat, columns)',
        'np.einsum("nfp,nkp->fk", flat, columns[::-1])',
        "∂L/∂w",
        ("∂L/∂x", "∂L/∂b", "output"),
    ),
    "max_pool2d": (
        "np.put_along_axis(dcolumns, winner[:, None]",
        "np.put_along_axis(dcolumns, np.zeros_like(winner)[:, None]",
        "∂L/∂x",
        ("output",),
    ),
    "batch_norm": (
        "dxhat\n        - dxhat.mean(axis=axes, keepdims=True)\n",
        "dxhat\n",
        "∂L/∂x",
        ("∂L/∂gamma", "∂L/∂beta", "output"),
    ),
    "rnn": (
        "grads.b_hh += da.sum(0)",
        "grads.b_hh += da.mean(0)",
        "∂L/∂b_hh",
        ("∂L/∂b_ih", "∂L/∂w_ih", "∂L/∂w_hh", "∂L/∂x", "∂L/∂h0", "output"),
    ),
    "lstm": (
        "df * f * (1 - f)",
        "df * (1 - f)",
        "∂L/∂w_hh",
        ("output",),
    ),
    "gru": (
        "[dr_pre, dz_pre, dn_pre * r]",
        "[dr_pre, dz_pre, dn_pre]",
        "∂L/∂w_hh",
        ("[T=1 N=3 D=4 H=5] gradient ∂L/∂w_ih", "[T=1 N=3 D=4 H=5] gradient ∂L/∂x", "output"),
    ),
    "attention": (
        "softmax_backward(dy @ np.swapaxes(v, -1, -2), weights) * scale",
        "softmax_backward(dy @ np.swapaxes(v, -1, -2), weights)",
        "∂L/∂q",
        ("∂L/∂v", "output"),
    ),
    "layer_norm": (
        "return dx, (dy * xhat).sum(axis=lead), dy.sum(axis=lead)",
        "return dx, dy.sum(axis=lead), dy.sum(axis=lead)",
        "∂L/∂gamma",
        ("∂L/∂x", "∂L/∂beta", "output"),
    ),
}


def test_every_exercise_has_a_planted_bug_and_grades_real_checks():
    assert set(BUGS) == set(EXERCISES)
    for exercise in EXERCISES.values():
        assert set(exercise.checks) <= set(CHECKS), exercise.name


@pytest.mark.parametrize("name", list(EXERCISES))
def test_the_stub_names_every_function_and_fails_until_written(name, tmp_path):
    stub = write_exercise(name, tmp_path)
    assert stub == tmp_path / f"{name}.py"
    text = stub.read_text()
    defined = [n.name for n in ast.parse(text).body if isinstance(n, ast.FunctionDef)]
    assert defined == list(EXERCISES[name].functions)
    assert text.count("# TODO:") == len(defined)
    assert f"dlab check {name} --impl {name}.py" in text
    results = check_implementation(name, stub)
    assert results and not any(r.passed for r in results)
    assert "NotImplementedError" in results[0].problems[0]


@pytest.mark.parametrize("name", list(EXERCISES))
def test_the_solution_passes(name, tmp_path):
    solution = tmp_path / f"{name}.py"
    solution.write_text(exercise_file(name, solved=True))
    results = check_implementation(name, solution)
    assert [r.name for r in results] == list(EXERCISES[name].checks)
    assert all(r.passed for r in results), [r.problems for r in results]


@pytest.mark.parametrize("name", list(EXERCISES))
def test_a_planted_bug_is_named_by_what_it_breaks(name, tmp_path):
    right, wrong, named, not_named = BUGS[name]
    text = exercise_file(name, solved=True)
    assert text.count(right) == 1, f"the solution of {name} changed: update BUGS"
    buggy = tmp_path / f"{name}.py"
    buggy.write_text(text.replace(right, wrong))
    results = check_implementation(name, buggy)
    problems = "\n".join(p for r in results for p in r.problems)
    assert not all(r.passed for r in results)
    assert named in problems, problems
    for untouched in not_named:
        assert untouched not in problems, (untouched, problems)


def test_the_cli_grades_a_file_and_names_the_wrong_gradient(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["exercise", "linear", str(tmp_path)]) == 0
    assert "dlab check linear --impl" in capsys.readouterr().out
    assert main(["check", "linear", "--impl", str(tmp_path / "linear.py")]) == 1
    out = capsys.readouterr().out
    assert "NotImplementedError: linear_forward (linear.py:" in " ".join(out.split())
    assert "1 of 1 failed: linear" in out
    right, wrong, named, _ = BUGS["linear"]
    (tmp_path / "linear.py").write_text(exercise_file("linear", solved=True).replace(right, wrong))
    assert main(["check", "linear", "--impl", str(tmp_path / "linear.py")]) == 1
    out = capsys.readouterr().out
    assert f"gradient {named}: relative error" in " ".join(out.split()) and "yours" in out
    assert max(len(line) for line in out.splitlines()) <= 80  # fits the terminal it was given
    (tmp_path / "linear.py").write_text(exercise_file("linear", solved=True))
    assert main(["check", "linear", "--impl", str(tmp_path / "linear.py")]) == 0
    assert "all 1 formulas agree with PyTorch" in capsys.readouterr().out


def test_the_check_table_fits_80_columns_and_honours_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["check", "linear", "conv2d", "multi_head_attention"]) == 0
    narrow = capsys.readouterr().out
    assert max(len(line) for line in narrow.splitlines()) <= 80
    assert "shapes tried" not in narrow
    monkeypatch.setenv("COLUMNS", "150")
    assert main(["check", "linear"]) == 0
    wide = capsys.readouterr().out
    assert "shapes tried" in wide and max(len(line) for line in wide.splitlines()) > 80


def test_the_learner_functions_are_put_back_whatever_happens(tmp_path):
    original = layers.linear_forward
    with pytest.raises(RuntimeError), substituted("linear", {"linear_forward": print}):
        assert layers.linear_forward is print
        raise RuntimeError
    assert layers.linear_forward is original
    solution = tmp_path / "linear.py"
    solution.write_text(exercise_file("linear", solved=True))
    check_implementation("linear", solution)
    assert layers.linear_forward is original


def test_a_nan_or_overflow_never_passes(tmp_path):
    assert math.isinf(relative_error(np.array([1.0, np.nan]), np.array([1.0, 2.0])))
    assert math.isinf(relative_error(np.array([np.inf]), np.array([1e308])))
    assert relative_error(np.array([np.nan, 1.0]), np.array([np.nan, 1.0])) == 0.0
    naive = tmp_path / "softmax.py"
    naive.write_text(
        exercise_file("softmax", solved=True).replace(
            "shifted = z - z.max(axis=axis, keepdims=True)", "shifted = z"
        )
    )
    (result,) = check_implementation("softmax", naive)
    assert not result.passed and math.isinf(result.forward)
    assert any("does e^z overflow?" in p for p in result.problems)


def test_bad_files_get_a_clear_error(tmp_path, capsys):
    with pytest.raises(DlabError, match="no file .*dlab exercise conv2d"):
        load_implementation("conv2d", tmp_path / "missing.py")
    broken = tmp_path / "broken.py"
    broken.write_text("def conv2d_forward(x:\n")
    with pytest.raises(DlabError, match=r"broken.py:1: "):
        load_implementation("conv2d", broken)
    half = tmp_path / "half.py"
    half.write_text("def conv2d_forward(x, w, b):\n    return x, None\n")
    with pytest.raises(DlabError, match="defines no function conv2d_backward"):
        load_implementation("conv2d", half)
    raising = tmp_path / "raising.py"
    raising.write_text("import nonexistent_module_xyz\n")
    with pytest.raises(DlabError, match="importing .*raising.py raised ModuleNotFoundError"):
        load_implementation("conv2d", raising)
    with pytest.raises(DlabError, match="did you mean 'conv2d'"):
        load_implementation("conv2", half)
    assert main(["check", "linear", "conv2d", "--impl", str(half)]) == 2
    assert "name one exercise" in capsys.readouterr().err
    write_exercise("linear", tmp_path)
    with pytest.raises(DlabError, match="exists .*--force"):
        write_exercise("linear", tmp_path)
    assert write_exercise("linear", tmp_path, force=True).read_text() == exercise_file("linear")


def test_the_exercise_list(capsys):
    assert main(["exercise"]) == 0
    out = capsys.readouterr().out
    for exercise in EXERCISES.values():
        assert f"{exercise.name} " in out and f"lesson {exercise.lesson}" in out


def test_arguments_help_shows_in_help(capsys, monkeypatch):
    # click >= 8.3 reset every typer argument's help to None (typer < 0.21): nothing showed
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["check", "--help"]) == 0
    assert "formulas to check (default: all); with --impl: one exercise" in capsys.readouterr().out
    assert main(["exercise", "--help"]) == 0
    assert "the .py file or folder to write (default: ./NAME.py)" in capsys.readouterr().out


def test_each_exercise_is_offered_by_its_lesson():
    from dlab.lessons import find

    for exercise in EXERCISES.values():
        assert f"`dlab exercise {exercise.name}`" in find(str(exercise.lesson)).read_text()
