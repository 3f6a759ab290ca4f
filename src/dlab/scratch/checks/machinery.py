"""The machinery of the checks: `compare` (forward, autograd, finite differences in float64),
`CheckResult`, and the `CHECKS` registry every check joins with `@check`."""

from __future__ import annotations

import inspect
import math
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlab.scratch.gradcheck import numeric_gradient, relative_error

TOLERANCE = 1e-10  # forward and autograd agreement, relative
FD_TOLERANCE = 1e-6  # finite differences carry O(h²) and rounding error


@dataclass
class CheckResult:
    """One formula's worst errors over the configurations tried, and what went wrong where."""

    name: str
    formula: str
    shapes: list[str] = field(default_factory=list)
    forward: float = 0.0
    gradient: float = 0.0
    finite_difference: float = 0.0
    problems: list[str] = field(default_factory=list)  # one line per failed comparison

    @property
    def passed(self) -> bool:
        return (
            self.forward <= TOLERANCE
            and self.gradient <= TOLERANCE
            and self.finite_difference <= FD_TOLERANCE
        )


def raised(error: BaseException) -> str:
    """'ValueError: … (file.py:12, in fn)': an exception as one line, where it was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    where = (
        f" ({Path(frames[-1].filename).name}:{frames[-1].lineno}, in {frames[-1].name})"
        if frames
        else ""
    )
    return f"{type(error).__name__}: {error}{where}"


def difference(
    what: str, ours: Any, theirs: Any, tolerance: float, against: str = "PyTorch"
) -> tuple[float, str | None]:
    """The relative error of `ours` against `theirs` and, above `tolerance`, a line saying what
    differs: the shape, or the error and the element that differs most."""
    if ours is None:
        return math.inf, f"{what}: yours is None, {against}'s is not"
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if ours.shape != theirs.shape:
        return math.inf, f"{what}: yours has shape {ours.shape}, {against}'s {theirs.shape}"
    error = relative_error(ours, theirs)
    if error <= tolerance:
        return error, None
    gap = np.abs(ours - theirs)
    gap = np.where(np.isnan(gap), np.inf, gap)  # a NaN is the worst difference there is
    at = np.unravel_index(int(np.argmax(gap)), ours.shape) if ours.shape else ()
    where = f" at {tuple(int(i) for i in at)}" if at else ""
    return error, (
        f"{what}: relative error {error:.1e}; largest difference{where}: "
        f"yours {ours[at]:.6g}, {against} {theirs[at]:.6g}"
    )


def compare_value(result: CheckResult, what: str, ours: Any, theirs: Any, shape: str) -> None:
    """Compare a value that has no gradient (an update, a mask, a search's result, an edge
    case) with the reference, and fold its error, and a line if it differs, into `result`."""
    if shape not in result.shapes:
        result.shapes.append(shape)
    error, problem = difference(what, ours, theirs, TOLERANCE)
    result.forward = max(result.forward, error)
    if problem:
        result.problems.append(f"[{shape}] {problem}")


def _said(result: CheckResult, shape: str, what: str) -> bool:
    """Whether `result` already names `what` in configuration `shape`."""
    return any(p.startswith(f"[{shape}] {what}:") for p in result.problems)


def _input_names(fn: Callable[..., Any], count: int) -> list[str]:
    """The names of `fn`'s first `count` parameters (what a gradient is called in a message)."""
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        names = []
    return [names[i] if i < len(names) else f"input {i}" for i in range(count)]


def compare(
    result: CheckResult,
    ours: Callable[..., tuple[np.ndarray, Any]],
    backward: Callable[[np.ndarray, Any], Sequence[np.ndarray | None]],
    reference: Callable[..., torch.Tensor],
    inputs: Sequence[np.ndarray],
    differentiable: Sequence[int],
    shape: str,
    seed: int = 0,
    finite_differences: bool = True,
) -> None:
    """Run one configuration and fold its errors (and a line for each failure) into `result`."""
    rng = np.random.default_rng(seed + 1)
    result.shapes.append(shape)
    names = _input_names(ours, len(inputs))
    tensors = [
        torch.tensor(
            a,
            dtype=torch.float64 if a.dtype.kind == "f" else None,
            requires_grad=i in differentiable,
        )
        for i, a in enumerate(inputs)
    ]
    expected = reference(*tensors)
    try:
        y, cache = ours(*[a.copy() for a in inputs])
    except Exception as error:  # a learner's code may raise anything: say what and where
        result.forward = math.inf
        result.gradient = result.finite_difference = math.nan  # not reached: shown as "—"
        result.problems.append(f"[{shape}] the forward pass raised {raised(error)}")
        return
    error, problem = difference("output", y, expected.detach().numpy(), TOLERANCE)
    result.forward = max(result.forward, error)
    if problem:
        result.problems.append(f"[{shape}] {problem}")
        if math.isinf(error):  # no output to differentiate
            result.gradient = result.finite_difference = math.nan
            return
    upstream = rng.normal(size=np.shape(y))
    try:
        grads = list(backward(upstream, cache))
    except Exception as error:
        result.gradient = math.inf
        result.finite_difference = math.nan
        result.problems.append(f"[{shape}] the backward pass raised {raised(error)}")
        return
    (expected * torch.tensor(upstream)).sum().backward()
    if len(grads) < len(differentiable):
        result.gradient, result.finite_difference = math.inf, math.nan
        result.problems.append(
            f"[{shape}] the backward pass returned {len(grads)} gradients; expected "
            f"{len(differentiable)}: " + ", ".join(f"∂L/∂{names[i]}" for i in differentiable)
        )
        return
    for position, index in enumerate(differentiable):
        _gradient(result, ours, inputs, index, grads[position], tensors[index].grad, upstream,
                  f"gradient ∂L/∂{names[index]}", shape, finite_differences)  # fmt: skip


def _gradient(
    result: CheckResult,
    ours: Callable[..., tuple[np.ndarray, Any]],
    inputs: Sequence[np.ndarray],
    index: int,
    grad: np.ndarray | None,
    autograd: torch.Tensor,
    upstream: np.ndarray,
    what: str,
    shape: str,
    finite_differences: bool,
) -> None:
    """One input's gradient against autograd's and, if asked, against finite differences."""
    error, problem = difference(what, grad, autograd.numpy(), TOLERANCE)
    result.gradient = max(result.gradient, error)
    if problem:
        result.problems.append(f"[{shape}] {problem}")
    if finite_differences and not math.isinf(error):
        copies = [a.copy() for a in inputs]
        numeric = numeric_gradient(
            lambda: float((ours(*copies)[0] * upstream).sum()), copies[index]
        )
        error, problem = difference(what, grad, numeric, FD_TOLERANCE, against="finite differences")
        result.finite_difference = max(result.finite_difference, error)
        if problem and not _said(result, shape, what):  # autograd said it already
            result.problems.append(f"[{shape}] {problem}")


# --- the checks -------------------------------------------------------------------------------

Check = Callable[[np.random.Generator], CheckResult]
CHECKS: dict[str, tuple[str, Check]] = {}


def check(name: str, formula: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS[name] = (formula, fn)
        return fn

    return register
