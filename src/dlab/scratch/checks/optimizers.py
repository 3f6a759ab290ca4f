"""The optimizer checks: each from-scratch update rule against torch.optim over 100 steps."""

from __future__ import annotations

import numpy as np
import torch

from dlab.scratch import optim
from dlab.scratch.checks.machinery import CHECKS, CheckResult
from dlab.scratch.gradcheck import relative_error

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
