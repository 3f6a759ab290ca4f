"""The machinery of the checks: `compare` (forward, autograd, finite differences in float64),
`CheckResult`, and the `CHECKS` registry every check joins with `@check`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dlab.scratch.gradcheck import numeric_gradient, relative_error

TOLERANCE = 1e-10  # forward and autograd agreement, relative
FD_TOLERANCE = 1e-6  # finite differences carry O(h²) and rounding error


@dataclass
class CheckResult:
    """One formula's worst errors over the configurations tried."""

    name: str
    formula: str
    shapes: list[str] = field(default_factory=list)
    forward: float = 0.0
    gradient: float = 0.0
    finite_difference: float = 0.0

    @property
    def passed(self) -> bool:
        return (
            self.forward <= TOLERANCE
            and self.gradient <= TOLERANCE
            and self.finite_difference <= FD_TOLERANCE
        )


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
    """Run one configuration and fold its errors into `result`."""
    rng = np.random.default_rng(seed + 1)
    y, cache = ours(*inputs)
    upstream = rng.normal(size=np.shape(y))
    grads = backward(upstream, cache)
    tensors = [
        torch.tensor(
            a,
            dtype=torch.float64 if a.dtype.kind == "f" else None,
            requires_grad=i in differentiable,
        )
        for i, a in enumerate(inputs)
    ]
    expected = reference(*tensors)
    (expected * torch.tensor(upstream)).sum().backward()
    result.shapes.append(shape)
    result.forward = max(result.forward, relative_error(y, expected.detach().numpy()))
    for position, index in enumerate(differentiable):
        result.gradient = max(
            result.gradient, relative_error(grads[position], tensors[index].grad.numpy())
        )
        if finite_differences:
            copies = [a.copy() for a in inputs]
            numeric = numeric_gradient(
                lambda copies=copies: float((ours(*copies)[0] * upstream).sum()), copies[index]
            )
            result.finite_difference = max(
                result.finite_difference, relative_error(grads[position], numeric)
            )


# --- the checks -------------------------------------------------------------------------------

Check = Callable[[np.random.Generator], CheckResult]
CHECKS: dict[str, tuple[str, Check]] = {}


def check(name: str, formula: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS[name] = (formula, fn)
        return fn

    return register
