"""`dlab check`: every from-scratch formula (dlab.scratch, NumPy) against PyTorch, live.

This module holds the machinery (`compare`, `CheckResult`, the `CHECKS` registry) and the
optimizer checks; the layer and sequence formulas' checks are in `formulas.py`. The checks sit
in their own package because they import torch, which the NumPy formulas in dlab/scratch never
do.

For each formula and a few random configurations: the forward output against torch's, the
hand-written gradients against torch autograd (same upstream gradient), and against central
finite differences, all in float64. Optimizers are compared as 100-step parameter trajectories.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dlab.errors import DlabError, did_you_mean
from dlab.scratch import optim
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


# the layer and sequence formulas register here, before the optimizers (the order `dlab check`
# prints them in)
from dlab.scratch.checks import formulas  # noqa: E402, F401

OPTIMIZERS = {
    "sgd": (optim.sgd, torch.optim.SGD, {"lr": 0.05}),
    "momentum": (optim.sgd, torch.optim.SGD, {"lr": 0.02, "momentum": 0.9, "weight_decay": 0.01}),
    "nesterov": (optim.sgd, torch.optim.SGD, {"lr": 0.02, "momentum": 0.9, "nesterov": True}),
    "rmsprop": (
        optim.rmsprop,
        torch.optim.RMSprop,
        {"lr": 0.01, "momentum": 0.5, "centered": True},
    ),
    "adam": (optim.adam, torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.01}),
    "adamw": (optim.adamw, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
}


def optimizer_trajectory_error(name: str, steps: int = 100, seed: int = 0) -> float:
    """Largest relative difference between our and torch's parameters over `steps` updates."""
    rule, torch_class, hyper = OPTIMIZERS[name]
    rng = np.random.default_rng(seed)
    a, target = rng.normal(size=(6, 4)), rng.normal(size=6)
    theta = rng.normal(size=4)
    reference = torch.tensor(theta.copy(), requires_grad=True)
    optimizer = torch_class([reference], **hyper)
    state: dict = {}
    worst = 0.0
    for _ in range(steps):  # least squares: J = ½‖Aθ − t‖²
        grad = a.T @ (a @ theta - target)
        theta, state = rule(theta, grad, state, **hyper)
        optimizer.zero_grad()
        (0.5 * (torch.tensor(a) @ reference - torch.tensor(target)).pow(2).sum()).backward()
        optimizer.step()
        worst = max(worst, relative_error(theta, reference.detach().numpy()))
    return worst


for _name in OPTIMIZERS:

    def _optimizer_check(rng: np.random.Generator, name: str = _name) -> CheckResult:
        result = CheckResult(
            f"optim_{name}", CHECKS[f"optim_{name}"][0], shapes=["θ(4), 100 steps"]
        )
        result.forward = optimizer_trajectory_error(name)
        return result

    CHECKS[f"optim_{_name}"] = (
        {
            "sgd": "θ ← θ − α∇J",
            "momentum": "b ← μb + g; θ ← θ − αb",
            "nesterov": "θ ← θ − α(g + μb)",
            "rmsprop": "θ ← θ − αg/(√s + ε)",
            "adam": "θ ← θ − α m̂/(√v̂ + ε)",
            "adamw": "θ ← θ(1 − αλ) − α m̂/(√v̂ + ε)",
        }[_name],
        _optimizer_check,
    )


def run_checks(names: Sequence[str] = (), seed: int = 0) -> list[CheckResult]:
    """Run the named checks (all by default) and return their results."""
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise DlabError(
            f"check: no formula called '{unknown[0]}'{did_you_mean(unknown[0], CHECKS)}; see `dlab check --list`"
        )
    return [CHECKS[name][1](np.random.default_rng(seed)) for name in (names or CHECKS)]
