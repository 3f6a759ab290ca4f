"""Model compression from scratch: quantization, magnitude pruning, distillation.

quantization   q = clamp(round(x / s), −2ᵇ⁻¹, 2ᵇ⁻¹ − 1),  s = max|x| / (2ᵇ⁻¹ − 1),  x ≈ s·q
pruning        zero the fraction `amount` of weights with the smallest |w|
distillation   L = T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)), averaged over the batch
"""

from __future__ import annotations

import numpy as np

from dlab.scratch.layers import log_softmax, softmax

Array = np.ndarray


def quantize_symmetric(x: Array, bits: int = 8) -> tuple[Array, float]:
    """Integers q and the scale s with x ≈ s·q: symmetric, per tensor, zero point 0 (rounding
    half to even, as torch.quantize_per_tensor)."""
    top = 2 ** (bits - 1) - 1
    scale = float(np.abs(x).max()) / top or 1.0
    return np.clip(np.round(x / scale), -top - 1, top).astype(np.int64), scale


def dequantize(q: Array, scale: float) -> Array:
    """x̂ = s·q: the error |x − x̂| is at most s/2 for every x inside the range."""
    return q.astype(np.float64) * scale


def magnitude_prune_mask(w: Array, amount: float) -> Array:
    """1 where a weight is kept, 0 where it is pruned: the round(amount·n) smallest |w| go."""
    pruned = round(amount * w.size)
    mask = np.ones(w.size)
    mask[np.argsort(np.abs(w), axis=None, kind="stable")[:pruned]] = 0.0
    return mask.reshape(w.shape)


def distillation_forward(student: Array, teacher: Array, temperature: float) -> tuple[float, tuple]:
    """T²·KL(p_t ‖ p_s) averaged over the batch, with p = softmax(z/T)."""
    p_t = softmax(teacher / temperature)
    log_p_s = log_softmax(student / temperature)
    kl = (p_t * (np.log(p_t) - log_p_s)).sum() / len(student)
    return float(temperature**2 * kl), (p_t, np.exp(log_p_s), temperature, len(student))


def distillation_backward(cache: tuple) -> Array:
    """dL/dz_s = T·(p_s − p_t) / N: the student moves toward the teacher's softened ranking."""
    p_t, p_s, temperature, n = cache
    return temperature * (p_s - p_t) / n
