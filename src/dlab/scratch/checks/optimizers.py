"""The optimizer checks: each from-scratch update rule against torch.optim over 100 steps."""

from __future__ import annotations

import math

import numpy as np
import torch

from dlab.scratch import optim
from dlab.scratch.checks.machinery import CHECKS, TOLERANCE, CheckResult, difference, raised

# the rule is named, and looked up in dlab.scratch.optim when the check runs (so that
# `dlab check adam --impl mine.py` can put a learner's rule in its place)
OPTIMIZERS = {
    "sgd": ("sgd", torch.optim.SGD, {"lr": 0.05}),
    "momentum": ("sgd", torch.optim.SGD, {"lr": 0.02, "momentum": 0.9, "weight_decay": 0.01}),
    "nesterov": ("sgd", torch.optim.SGD, {"lr": 0.02, "momentum": 0.9, "nesterov": True}),
    "rmsprop": ("rmsprop", torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.5, "centered": True}),
    "adam": ("adam", torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.01}),
    "adamw": ("adamw", torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
}


def optimizer_trajectory_error(name: str, steps: int = 100, seed: int = 0) -> float:
    """Largest relative difference between our and torch's parameters over `steps` updates."""
    return optimizer_trajectory(name, steps, seed)[0]


def optimizer_trajectory(name: str, steps: int = 100, seed: int = 0) -> tuple[float, str | None]:
    """The largest relative difference over `steps` updates, and a line naming the first step
    whose parameters differ (or what the rule raised)."""
    rule_name, torch_class, hyper = OPTIMIZERS[name]
    rule = getattr(optim, rule_name)
    rng = np.random.default_rng(seed)
    a, target = rng.normal(size=(6, 4)), rng.normal(size=6)
    theta = rng.normal(size=4)
    reference = torch.tensor(theta.copy(), requires_grad=True)
    optimizer = torch_class([reference], **hyper)
    state: dict = {}
    worst, first = 0.0, None
    settings = ", ".join(f"{k}={v}" for k, v in hyper.items())
    for step in range(1, steps + 1):  # least squares: J = ½‖Aθ − t‖²
        grad = a.T @ (a @ theta - target)
        try:
            theta, state = rule(theta, grad, state, **hyper)
        except Exception as error:
            return math.inf, f"[{settings}] {rule_name} raised at step {step}: {raised(error)}"
        optimizer.zero_grad()
        (0.5 * (torch.tensor(a) @ reference - torch.tensor(target)).pow(2).sum()).backward()
        optimizer.step()
        error, problem = difference(
            f"θ after step {step}", theta, reference.detach().numpy(), TOLERANCE
        )
        worst = max(worst, error)
        if problem and first is None:
            first = f"[{settings}] {problem}"
        if math.isinf(error):
            break
    return worst, first


for _name in OPTIMIZERS:

    def _optimizer_check(rng: np.random.Generator, name: str = _name) -> CheckResult:
        result = CheckResult(
            f"optim_{name}", CHECKS[f"optim_{name}"][0], shapes=["θ(4), 100 steps"]
        )
        result.forward, problem = optimizer_trajectory(name)
        result.problems += [problem] if problem else []
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
