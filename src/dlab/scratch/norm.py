"""Normalisation layers (training mode): batch norm over the batch, layer norm over features.

x̂ = (x - μ) / √(σ² + ε),   y = γ x̂ + β
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray


def batchnorm_forward(
    x: Array, gamma: Array, beta: Array, eps: float = 1e-5
) -> tuple[Array, tuple]:
    """x (N, C) or (N, C, H, W): statistics per channel over every other axis (biased variance)."""
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    inv_std = 1 / np.sqrt(var + eps)
    xhat = (x - mean) * inv_std
    return gamma.reshape(shape) * xhat + beta.reshape(shape), (
        xhat,
        inv_std,
        gamma.reshape(shape),
        axes,
    )


def batchnorm_backward(dy: Array, cache: tuple) -> tuple[Array, Array, Array]:
    """dx = γ/σ · (dy - mean(dy) - x̂ · mean(dy ⊙ x̂)), the compact form of the chain rule."""
    xhat, inv_std, gamma, axes = cache
    dgamma, dbeta = (dy * xhat).sum(axis=axes), dy.sum(axis=axes)
    dxhat = dy * gamma
    dx = inv_std * (
        dxhat
        - dxhat.mean(axis=axes, keepdims=True)
        - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True)
    )
    return dx, dgamma, dbeta


def layernorm_forward(
    x: Array, gamma: Array, beta: Array, eps: float = 1e-5
) -> tuple[Array, tuple]:
    """Statistics over the last axis of each sample."""
    mean, var = x.mean(axis=-1, keepdims=True), x.var(axis=-1, keepdims=True)
    inv_std = 1 / np.sqrt(var + eps)
    xhat = (x - mean) * inv_std
    return gamma * xhat + beta, (xhat, inv_std, gamma)


def layernorm_backward(dy: Array, cache: tuple) -> tuple[Array, Array, Array]:
    """dx, dγ, dβ: the same compact form as batch norm's, over the last axis."""
    xhat, inv_std, gamma = cache
    lead = tuple(range(dy.ndim - 1))
    dxhat = dy * gamma
    dx = inv_std * (
        dxhat
        - dxhat.mean(axis=-1, keepdims=True)
        - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)
    )
    return dx, (dy * xhat).sum(axis=lead), dy.sum(axis=lead)


def batchnorm_running_update(
    running_mean: Array, running_var: Array, x: Array, momentum: float = 0.1
) -> tuple[Array, Array]:
    """The statistics evaluation uses, updated from one training batch as torch does:
    r ← (1 − m)·r + m·batch statistic, with the *unbiased* variance (÷ (n − 1)) for the running
    variance, although the batch itself was normalised with the biased one (÷ n)."""
    axes = (0, *range(2, x.ndim))
    count = x.size // x.shape[1]
    mean = x.mean(axis=axes)
    unbiased = x.var(axis=axes) * count / (count - 1)
    return (1 - momentum) * running_mean + momentum * mean, (
        1 - momentum
    ) * running_var + momentum * unbiased
