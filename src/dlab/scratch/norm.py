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
