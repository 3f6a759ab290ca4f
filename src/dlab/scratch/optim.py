"""Optimizers as pure update rules: (θ, ∇J(θ), state) -> (θ', state'), following torch.optim exactly.

SGD       θ ← θ − α g                     (g = ∇J(θ) + λθ with weight decay λ)
momentum  b ← μ b + g;  θ ← θ − α b       (Nesterov: θ ← θ − α (g + μ b))
RMSprop   s ← ρ s + (1−ρ) g²;  θ ← θ − α g / (√s + ε)
Adam      m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  θ ← θ − α m̂ / (√v̂ + ε), m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ)
AdamW     θ ← θ(1 − αλ) first, then Adam without weight decay in g
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = np.ndarray
State = dict[str, Any]


def sgd(
    theta: Array,
    grad: Array,
    state: State,
    lr: float,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> tuple[Array, State]:
    """One SGD step (with momentum and Nesterov as torch.optim.SGD); returns θ' and the state."""
    g = grad + weight_decay * theta
    if momentum:
        buffer = g.copy() if "buffer" not in state else momentum * state["buffer"] + g
        state = {"buffer": buffer}
        g = g + momentum * buffer if nesterov else buffer
    return theta - lr * g, state


def rmsprop(
    theta: Array,
    grad: Array,
    state: State,
    lr: float,
    alpha: float = 0.99,
    eps: float = 1e-8,
    momentum: float = 0.0,
    centered: bool = False,
    weight_decay: float = 0.0,
) -> tuple[Array, State]:
    g = grad + weight_decay * theta
    square = alpha * state.get("square", 0.0) + (1 - alpha) * g * g
    previous = state
    state = {"square": square}
    if centered:
        mean = alpha * previous.get("mean", 0.0) + (1 - alpha) * g
        state["mean"] = mean
        denom = np.sqrt(square - mean * mean) + eps
    else:
        denom = np.sqrt(square) + eps
    if momentum:
        buffer = momentum * previous.get("buffer", 0.0) + g / denom
        state["buffer"] = buffer
        return theta - lr * buffer, state
    return theta - lr * g / denom, state


def adam(
    theta: Array,
    grad: Array,
    state: State,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> tuple[Array, State]:
    """One Adam step as torch.optim.Adam: the state holds the step count t, m and v."""
    beta1, beta2 = betas
    g = grad + weight_decay * theta
    step = state.get("step", 0) + 1
    m = beta1 * state.get("m", 0.0) + (1 - beta1) * g
    v = beta2 * state.get("v", 0.0) + (1 - beta2) * g * g
    denom = np.sqrt(v) / np.sqrt(1 - beta2**step) + eps
    return theta - (lr / (1 - beta1**step)) * m / denom, {"step": step, "m": m, "v": v}


def adamw(
    theta: Array,
    grad: Array,
    state: State,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
) -> tuple[Array, State]:
    return adam(theta * (1 - lr * weight_decay), grad, state, lr, betas, eps, 0.0)


def clip_grad_norm(
    grads: list[Array], max_norm: float, eps: float = 1e-6
) -> tuple[list[Array], float]:
    """Scale every gradient by min(1, c / (‖g‖ + ε)), ‖g‖ the norm of all of them together, as
    torch.nn.utils.clip_grad_norm_; returns the clipped gradients and the norm before clipping.
    It bounds an exploding gradient's step without changing its direction."""
    total = float(np.sqrt(sum(float((g * g).sum()) for g in grads)))
    scale = min(1.0, max_norm / (total + eps))
    return [g * scale for g in grads], total
