"""Federated averaging and differentially private SGD, from scratch.

FedAvg   θ = Σ_k (n_k / n) θ_k: the server averages the clients' weights, each weighted by how
         many examples it trained on; the data never leaves the clients.
DP-SGD   g̃ = (1/B) (Σ_i g_i · min(1, C / ‖g_i‖) + σ C ξ),  ξ ~ N(0, I): clip every example's
         gradient to norm C, so that no one example can move the model by more than C, then
         add noise scaled to that bound (Abadi et al. 2016).
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray


def fedavg(client_weights: list[list[Array]], examples: list[int]) -> list[Array]:
    """Each layer's weights averaged over the clients, weighted by their example counts."""
    total = sum(examples)
    return [
        sum(
            weights[layer] * (n / total)
            for weights, n in zip(client_weights, examples, strict=True)
        )
        for layer in range(len(client_weights[0]))
    ]


def clip_per_sample(per_sample: Array, max_norm: float) -> Array:
    """Every row (one example's flattened gradient) scaled to norm at most `max_norm` (as Opacus:
    factor min(1, C / (‖g_i‖ + 10⁻⁶)))."""
    norms = np.sqrt((per_sample.reshape(len(per_sample), -1) ** 2).sum(axis=1))
    factor = np.minimum(1.0, max_norm / (norms + 1e-6))
    return per_sample * factor.reshape(-1, *([1] * (per_sample.ndim - 1)))


def dp_sgd_gradient(
    per_sample: Array, max_norm: float, noise_multiplier: float, noise: Array
) -> Array:
    """The private gradient: clipped per-example gradients summed, plus σ·C·ξ, over the batch
    size. `noise` is ξ, standard normal, drawn by the caller (so a test can replay it)."""
    clipped = clip_per_sample(per_sample, max_norm)
    return (clipped.sum(axis=0) + noise_multiplier * max_norm * noise) / len(per_sample)
