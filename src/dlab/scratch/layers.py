"""Dense layers, activations, losses, regularisation, dropout and embeddings.

linear        z = x Wᵀ + b
activations   ReLU max(0, x) · sigmoid 1/(1+e⁻ˣ) · tanh · GELU x·Φ(x)
softmax       softmax(z)_i = e^{z_i - max z} / Σ_j e^{z_j - max z}
cross-entropy L = -Σ_i y_i log softmax(z)_i, with y smoothed: (1-ε)·onehot + ε/K
MSE           L = mean((ŷ - y)²)
penalties     λ₁ Σ|w| and (λ₂/2) Σ w²
dropout       y = x · m / (1 - p), m ~ Bernoulli(1 - p) (inverted dropout)
embedding     v = E[w]  (a row lookup; its gradient is a scatter-add)
"""

from __future__ import annotations

import math

import numpy as np

Array = np.ndarray
_erf = np.frompyfunc(math.erf, 1, 1)


def linear_forward(x: Array, w: Array, b: Array | None) -> tuple[Array, tuple]:
    """z = x Wᵀ + b for x (..., in), W (out, in), b (out,)."""
    z = x @ w.T
    if b is not None:
        z = z + b
    return z, (x, w, b is not None)


def linear_backward(dz: Array, cache: tuple) -> tuple[Array, Array, Array | None]:
    """dx = dz W, dW = dzᵀ x, db = Σ dz (summed over every leading dimension)."""
    x, w, has_bias = cache
    flat_dz, flat_x = dz.reshape(-1, dz.shape[-1]), x.reshape(-1, x.shape[-1])
    return dz @ w, flat_dz.T @ flat_x, flat_dz.sum(0) if has_bias else None


def relu_forward(x: Array) -> tuple[Array, Array]:
    return np.maximum(x, 0.0), x


def relu_backward(dy: Array, x: Array) -> Array:
    return dy * (x > 0)  # the subgradient at 0 is 0, as torch


def sigmoid_forward(x: Array) -> tuple[Array, Array]:
    """σ(x) = 1 / (1 + e⁻ˣ), without overflow for large |x|; the cache is σ(x) itself."""
    y = np.where(
        x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x)))
    )  # no overflow
    return y, y


def sigmoid_backward(dy: Array, y: Array) -> Array:
    """dσ/dx = σ(x)(1 − σ(x)), times the upstream gradient dy."""
    return dy * y * (1 - y)


def tanh_forward(x: Array) -> tuple[Array, Array]:
    y = np.tanh(x)
    return y, y


def tanh_backward(dy: Array, y: Array) -> Array:
    return dy * (1 - y**2)


def gelu_forward(x: Array) -> tuple[Array, Array]:
    """GELU(x) = x Φ(x) with the exact normal CDF Φ(x) = (1 + erf(x/√2))/2."""
    cdf = 0.5 * (1 + _erf(x / math.sqrt(2)).astype(np.float64))
    return x * cdf, x


def gelu_backward(dy: Array, x: Array) -> Array:
    cdf = 0.5 * (1 + _erf(x / math.sqrt(2)).astype(np.float64))
    pdf = np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)
    return dy * (cdf + x * pdf)


def softmax(z: Array, axis: int = -1) -> Array:
    """Subtracting the max keeps e^z finite; the result is unchanged."""
    shifted = z - z.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(z: Array, axis: int = -1) -> Array:
    """z - logsumexp(z), computed stably."""
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax_backward(dy: Array, y: Array, axis: int = -1) -> Array:
    """Jacobian-vector product of softmax: y ⊙ (dy - Σ dy·y)."""
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


def log_softmax_backward(dy: Array, y: Array, axis: int = -1) -> Array:
    """For y = log_softmax(z): dz = dy - softmax(z) Σ dy."""
    return dy - np.exp(y) * dy.sum(axis=axis, keepdims=True)


def cross_entropy_forward(
    logits: Array, targets: Array, label_smoothing: float = 0.0
) -> tuple[float, tuple]:
    """Mean over N of -Σ_k q_k log p_k with q = (1-ε)·onehot(target) + ε/K (torch's definition)."""
    n, k = logits.shape
    log_p = log_softmax(logits)
    q = np.full((n, k), label_smoothing / k)
    q[np.arange(n), targets] += 1 - label_smoothing
    return float(-(q * log_p).sum() / n), (log_p, q)


def cross_entropy_backward(cache: tuple) -> Array:
    """dL/dz = (softmax(z) - q) / N."""
    log_p, q = cache
    return (np.exp(log_p) - q) / len(q)


def mse_forward(prediction: Array, target: Array) -> tuple[float, tuple]:
    diff = prediction - target
    return float((diff**2).mean()), diff


def mse_backward(diff: Array) -> Array:
    return 2 * diff / diff.size


def l1_penalty(w: Array, strength: float) -> tuple[float, Array]:
    """λ Σ|w| and its (sub)gradient λ sign(w)."""
    return float(strength * np.abs(w).sum()), strength * np.sign(w)


def l2_penalty(w: Array, strength: float) -> tuple[float, Array]:
    """(λ/2) Σ w² and its gradient λ w: exactly what weight decay subtracts."""
    return float(0.5 * strength * (w**2).sum()), strength * w


def dropout_forward(x: Array, mask: Array, p: float) -> tuple[Array, Array]:
    """Inverted dropout with a given keep-mask: kept units are scaled by 1/(1-p), so E[y] = x."""
    scale = mask / (1 - p)
    return x * scale, scale


def dropout_backward(dy: Array, scale: Array) -> Array:
    return dy * scale


def embedding_forward(ids: Array, table: Array) -> tuple[Array, tuple]:
    """v = E[w]: one row of the table per id."""
    return table[ids], (ids, table.shape)


def embedding_backward(dv: Array, cache: tuple) -> Array:
    """dE accumulates dv into the rows that were looked up (an id seen twice gets both)."""
    ids, shape = cache
    dtable = np.zeros(shape)
    np.add.at(dtable, ids.reshape(-1), dv.reshape(-1, shape[1]))
    return dtable


def reparameterize_forward(mu: Array, log_var: Array, eps: Array) -> tuple[Array, tuple]:
    """z = μ + σ·ε with σ = exp(½ log σ²): the noise ε ~ N(0, I) is an input, so z is a
    differentiable function of μ and log σ²."""
    sigma = np.exp(0.5 * log_var)
    return mu + sigma * eps, (sigma, eps)


def reparameterize_backward(dz: Array, cache: tuple) -> tuple[Array, Array]:
    """dμ = dz; d(log σ²) = dz · ε · σ / 2."""
    sigma, eps = cache
    return dz, dz * eps * sigma / 2


def vae_loss_forward(
    logits: Array, x: Array, mu: Array, log_var: Array, beta: float = 1.0
) -> tuple[float, tuple]:
    """The negative ELBO per sample, averaged over N:
    mean_n [ Σ_pixels BCE(logits, x) + β · ½ Σ_j (μ_j² + σ_j² − log σ_j² − 1) ]."""
    n = len(x)
    bce = np.maximum(logits, 0) - logits * x + np.log1p(np.exp(-np.abs(logits)))  # stable
    kl = 0.5 * (mu**2 + np.exp(log_var) - log_var - 1)
    return float((bce.sum() + beta * kl.sum()) / n), (logits, x, mu, log_var, beta)


def vae_loss_backward(cache: tuple) -> tuple[Array, Array, Array]:
    """d/dlogits = (sigmoid(logits) − x) / N; dμ = β μ / N; d(log σ²) = β (σ² − 1) / 2N."""
    logits, x, mu, log_var, beta = cache
    n = len(x)
    probability = 0.5 * (1 + np.tanh(0.5 * logits))  # sigmoid, without overflow
    return (probability - x) / n, beta * mu / n, beta * (np.exp(log_var) - 1) / (2 * n)


def lora_forward(
    x: Array, w: Array, b: Array | None, a: Array, up: Array, alpha: float
) -> tuple[Array, tuple]:
    """A frozen linear layer plus a trainable low-rank update (LoRA, Hu et al. 2021):
    y = x Wᵀ + b + (α/r)·x Aᵀ Bᵀ with A (r, in), B (out, r); B starts at zero, so training
    starts from the pretrained layer exactly."""
    scale = alpha / a.shape[0]
    low = x @ a.T  # (…, r)
    return linear_forward(x, w, b)[0] + scale * (low @ up.T), (x, w, a, up, low, scale)


def lora_backward(dy: Array, cache: tuple) -> tuple[Array, Array, Array]:
    """dx, dA, dB: W and b are frozen, so they get no gradient (and need no optimizer state)."""
    x, w, a, up, low, scale = cache
    flat_dy, flat_x = dy.reshape(-1, dy.shape[-1]), x.reshape(-1, x.shape[-1])
    flat_low = low.reshape(-1, low.shape[-1])
    d_low = scale * (dy @ up)  # (…, r)
    dx = dy @ w + d_low @ a
    return dx, d_low.reshape(-1, a.shape[0]).T @ flat_x, scale * flat_dy.T @ flat_low
