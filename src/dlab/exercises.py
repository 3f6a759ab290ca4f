"""Exercises, CS231n-style: write a formula yourself and let `dlab check` grade it.

`dlab exercise conv2d` writes `conv2d.py`: the functions to write, with their signatures and
docstrings taken from dlab.scratch (so a stub never drifts from what the check calls), a `TODO`
saying what each must compute, and a body that raises `NotImplementedError`. `dlab check conv2d
--impl conv2d.py` then runs the very check that `dlab check conv2d` runs on dlab.scratch — the
forward output against PyTorch's, every gradient against autograd and finite differences, in
float64 — with the learner's functions put in place of ours for the length of the check, and
says which output or gradient differs, where, and by how much.

The solutions are dlab.scratch itself: `solution(name)` is the exercise's file with the real
bodies, and the test suite checks every one of them the same way (tests/scratch/test_exercises.py).
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import inspect
import textwrap
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlab.errors import DlabError, did_you_mean


@dataclass(frozen=True)
class Exercise:
    """One exercise: the functions of `module` the learner writes, and what each must do."""

    name: str
    module: str  # where the functions live in dlab.scratch
    todo: dict[str, str]  # function -> what to compute (the stub's TODO)
    checks: tuple[str, ...]  # the `dlab check` names that grade it
    lesson: int

    @property
    def functions(self) -> tuple[str, ...]:
        return tuple(self.todo)


EXERCISES: dict[str, Exercise] = {
    e.name: e
    for e in (
        Exercise(
            "linear",
            "dlab.scratch.layers",
            {
                "linear_forward": "z = x Wᵀ + b; cache what the backward pass needs",
                "linear_backward": "dx = dz W, dW = dzᵀ x, db = Σ dz over every leading axis "
                "(None when there is no bias)",
            },
            ("linear",),
            1,
        ),
        Exercise(
            "sigmoid",
            "dlab.scratch.layers",
            {
                "sigmoid_forward": "σ(x) = 1/(1 + e⁻ˣ); for x < 0 use eˣ/(1 + eˣ) so e⁻ˣ never "
                "overflows",
                "sigmoid_backward": "dy · σ(x)(1 − σ(x)), from the cached σ(x)",
            },
            ("sigmoid",),
            1,
        ),
        Exercise(
            "softmax",
            "dlab.scratch.layers",
            {
                "softmax": "e^{z − max z} / Σ e^{z − max z} along `axis` (subtract the max: "
                "e¹⁰⁰⁰ overflows)",
                "softmax_backward": "the Jacobian-vector product y ⊙ (dy − Σ dy ⊙ y)",
            },
            ("softmax",),
            2,
        ),
        Exercise(
            "cross_entropy",
            "dlab.scratch.layers",
            {
                "cross_entropy_forward": "mean over N of −Σ_k q_k log softmax(z)_k, with "
                "q = (1 − ε)·onehot(target) + ε/K",
                "cross_entropy_backward": "dL/dz = (softmax(z) − q) / N",
            },
            ("cross_entropy",),
            2,
        ),
        Exercise(
            "sgd",
            "dlab.scratch.optim",
            {
                "sgd": "g = ∇J + λθ; with momentum μ: b ← μb + g (b = g on the first step), "
                "then θ ← θ − α·b, or θ ← θ − α(g + μb) with Nesterov",
            },
            ("optim_sgd", "optim_momentum", "optim_nesterov"),
            3,
        ),
        Exercise(
            "adam",
            "dlab.scratch.optim",
            {
                "adam": "t ← t + 1; m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; "
                "θ ← θ − α m̂/(√v̂ + ε) with m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ); g includes λθ",
            },
            ("optim_adam",),
            3,
        ),
        Exercise(
            "conv2d",
            "dlab.scratch.conv",
            {
                "conv2d_forward": "gather every receptive field into a column (im2col), then "
                "one matrix product with the filters; add the bias",
                "conv2d_backward": "dw: upstream · columnsᵀ; dx: filtersᵀ · upstream, scattered "
                "back with col2im; db: the upstream summed over N, height and width",
            },
            ("conv2d",),
            6,
        ),
        Exercise(
            "max_pool2d",
            "dlab.scratch.conv",
            {
                "maxpool2d_forward": "the largest value of each window (padding counts as −∞); "
                "remember where it was",
                "maxpool2d_backward": "each window's gradient goes to the position of its "
                "maximum, and nowhere else",
            },
            ("max_pool2d",),
            6,
        ),
        Exercise(
            "batch_norm",
            "dlab.scratch.norm",
            {
                "batchnorm_forward": "per channel, over every other axis: x̂ = (x − μ)/√(σ² + ε) "
                "with the biased variance; y = γx̂ + β",
                "batchnorm_backward": "dγ = Σ dy⊙x̂, dβ = Σ dy, "
                "dx = (γ/σ)(dy − mean(dy) − x̂·mean(dy⊙x̂))",
            },
            ("batch_norm",),
            7,
        ),
        Exercise(
            "rnn",
            "dlab.scratch.recurrent",
            {
                "rnn_cell_forward": "h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)",
                "rnn_cell_backward": "through tanh (1 − h'²), then add this step's dW_ih, dW_hh, "
                "db_ih, db_hh to `grads`; return dx and dh",
            },
            ("rnn",),
            8,
        ),
        Exercise(
            "lstm",
            "dlab.scratch.recurrent",
            {
                "lstm_cell_forward": "gates = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh split in i, f, g, o; "
                "σ, σ, tanh, σ; c' = f⊙c + i⊙g; h' = o⊙tanh(c')",
                "lstm_cell_backward": "do, then dc (from dc' and through tanh(c')), then di, df, "
                "dg; back through each gate's nonlinearity; add the weight gradients to "
                "`grads`; return dx, dh, dc",
            },
            ("lstm",),
            9,
        ),
        Exercise(
            "gru",
            "dlab.scratch.recurrent",
            {
                "gru_cell_forward": "r, z = σ(…); n = tanh(x W_inᵀ + b_in + r⊙(h W_hnᵀ + b_hn)); "
                "h' = (1 − z)⊙n + z⊙h",
                "gru_cell_backward": "through h' = (1 − z)⊙n + z⊙h, then n's tanh and r's gate "
                "(r multiplies the hidden part only); add the weight gradients to `grads`",
            },
            ("gru",),
            9,
        ),
        Exercise(
            "attention",
            "dlab.scratch.attention",
            {
                "attention_forward": "scores = Q Kᵀ/√d_k, −∞ where the mask is False; "
                "weights = softmax(scores); output = weights V",
                "attention_backward": "dV = weightsᵀ dy; through softmax (masked weights are 0); "
                "scale by 1/√d_k; dQ = dscores K, dK = dscoresᵀ Q",
            },
            ("attention",),
            11,
        ),
        Exercise(
            "layer_norm",
            "dlab.scratch.norm",
            {
                "layernorm_forward": "over the last axis of each sample: x̂ = (x − μ)/√(σ² + ε); "
                "y = γx̂ + β",
                "layernorm_backward": "batch norm's backward, with the statistics over the last "
                "axis and dγ, dβ summed over every other",
            },
            ("layer_norm",),
            12,
        ),
    )
}


def find(name: str) -> Exercise:
    """The exercise called `name`, or a clear error with the nearest name."""
    try:
        return EXERCISES[name]
    except KeyError:
        raise DlabError(
            f"exercise: none called '{name}'{did_you_mean(name, EXERCISES)}; see `dlab exercise`"
        ) from None


# --- the learner's file -----------------------------------------------------------------------


def _names_read(exercise: Exercise) -> set[str]:
    """Every name the solution's functions mention, annotations included."""
    module = importlib.import_module(exercise.module)
    names: set[str] = set()
    for function in exercise.functions:
        tree = ast.parse(textwrap.dedent(inspect.getsource(getattr(module, function))))
        names |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    return names


def _helpers(exercise: Exercise) -> list[str]:
    """What the solution uses from its module besides the functions to write: the stub imports
    them, so the learner may use them too (im2col for conv2d, RecurrentWeights, softmax, …)."""
    module = vars(importlib.import_module(exercise.module))
    return sorted(
        n
        for n in _names_read(exercise)
        if n in module
        and n not in exercise.functions
        and not isinstance(module[n], types.ModuleType)
        and not hasattr(builtins, n)
        and n not in ("Array", "annotations")
    )


def _modules_used(exercise: Exercise) -> list[str]:
    """The module imports the solution needs (np, math), for the top of the file."""
    imports = {"np": "import numpy as np", "math": "import math"}
    return sorted({imports[n] for n in _names_read(exercise) if n in imports} | {imports["np"]})


def _function_text(function: Callable[..., Any], todo: str | None) -> str:
    """The function's source; with a `todo`, only its signature and docstring, then the TODO."""
    source = textwrap.dedent(inspect.getsource(function)).rstrip()
    if todo is None:
        return source
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.FunctionDef)
    first = node.body[0]
    documented = (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )
    lines = source.splitlines()
    head = lines[: first.end_lineno if documented else first.lineno - 1]
    indent = " " * first.col_offset
    wrapped = textwrap.wrap(todo, 92 - len(indent), initial_indent="TODO: ", subsequent_indent="  ")
    return "\n".join(
        [*head]
        + [f"{indent}# {line}" for line in wrapped]
        + [f'{indent}raise NotImplementedError("{function.__name__}")']
    )


def exercise_file(name: str, solved: bool = False) -> str:
    """The file `dlab exercise NAME` writes; `solved`: with dlab.scratch's bodies (the solution)."""
    exercise = find(name)
    module = importlib.import_module(exercise.module)
    helpers = _helpers(exercise)
    checks = " ".join(exercise.checks)
    header = [
        f'"""Exercise {exercise.name}: {", ".join(exercise.functions)}.',
        "",
        "Write every function below where it says TODO (NumPy only), then run",
        "",
        f"    dlab check {exercise.name} --impl {exercise.name}.py",
        "",
        f"It runs `dlab check {checks}` on your functions: the output against PyTorch's, every",
        "gradient against autograd and finite differences, in float64, and names what differs.",
        f"The lesson: `dlab lesson {exercise.lesson}`.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        *_modules_used(exercise),
        "",
    ]
    if helpers:
        header.append(f"from {exercise.module} import {', '.join(helpers)}  # given: use freely")
        header.append("")
    header += ["Array = np.ndarray", ""]
    bodies = [
        _function_text(getattr(module, f), None if solved else exercise.todo[f])
        for f in exercise.functions
    ]
    return "\n".join(header) + "\n\n" + "\n\n\n".join(bodies) + "\n"


def load_implementation(name: str, path: Path) -> dict[str, Callable[..., Any]]:
    """The exercise's functions as defined in the learner's file, or an error naming what is
    missing, unreadable or not a function."""
    exercise = find(name)
    if not path.is_file():
        raise DlabError(f"check --impl: no file {path} (write one with `dlab exercise {name}`)")
    try:
        source = path.read_text(encoding="utf-8")
        code = compile(source, str(path), "exec")
    except SyntaxError as error:
        raise DlabError(f"check --impl: {path}:{error.lineno}: {error.msg}") from None
    except UnicodeDecodeError as error:
        raise DlabError(f"check --impl: {path} is not UTF-8 text ({error.reason})") from None
    namespace: dict[str, Any] = {"__name__": f"dlab_exercise_{name}", "__file__": str(path)}
    try:
        exec(code, namespace)
    except Exception as error:
        from dlab.scratch.checks.machinery import raised

        raise DlabError(f"check --impl: importing {path} raised {raised(error)}") from None
    missing = [f for f in exercise.functions if not callable(namespace.get(f))]
    if missing:
        raise DlabError(
            f"check --impl: {path} defines no function {', '.join(missing)}; exercise "
            f"{name} asks for {', '.join(exercise.functions)}"
        )
    return {f: namespace[f] for f in exercise.functions}


@contextmanager
def substituted(name: str, functions: dict[str, Callable[..., Any]]) -> Iterator[None]:
    """For the length of the block, dlab.scratch's functions of exercise `name` are the
    learner's: the checks (and the loops that call a cell, such as `lstm_forward`) look them up
    in their module when they run, so they run the learner's code. Restored on the way out,
    whatever happens."""
    module = importlib.import_module(find(name).module)
    saved = {f: getattr(module, f) for f in functions}
    try:
        for f, function in functions.items():
            setattr(module, f, function)
        yield
    finally:
        for f, function in saved.items():
            setattr(module, f, function)


def check_implementation(name: str, path: Path, seed: int = 0) -> list[Any]:
    """Run exercise `name`'s checks on the functions in `path`; their `CheckResult`s."""
    from dlab.scratch.checks import run_checks

    functions = load_implementation(name, path)
    with substituted(name, functions):
        return run_checks(list(find(name).checks), seed=seed)


def write_exercise(name: str, target: Path, force: bool = False) -> Path:
    """Write the stub of exercise `name` to `target` (a .py file, or a folder that gets
    NAME.py); never over a learner's work unless `force`."""
    from dlab._io import atomic_write_text

    find(name)
    if target.is_dir() or target.suffix != ".py":
        target.mkdir(parents=True, exist_ok=True)
        target = target / f"{name}.py"
    if target.exists() and not force:
        raise DlabError(f"exercise: {target} exists (your work?); --force writes over it")
    atomic_write_text(target, exercise_file(name))
    return target
