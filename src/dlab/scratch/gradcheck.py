"""Finite differences: the slow, obviously correct derivative every backward pass is checked against.

∂f/∂x_i ≈ (f(x + h e_i) − f(x − h e_i)) / 2h      (error O(h²))
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Array = np.ndarray


def numeric_gradient(f: Callable[[], float], x: Array, h: float = 1e-6) -> Array:
    """Gradient of the scalar f() with respect to the array x, which f reads (x is perturbed in place)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    for _ in it:
        i = it.multi_index
        saved = x[i]
        x[i] = saved + h
        plus = f()
        x[i] = saved - h
        minus = f()
        x[i] = saved
        grad[i] = (plus - minus) / (2 * h)
    return grad


def relative_error(a: Array, b: Array) -> float:
    """max |a − b| / max(|a|, |b|, tiny): 0 for identical arrays, ~1 for unrelated ones, and
    infinite where one holds a NaN or ∞ the other does not (a NaN must never compare as small)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return 0.0 if np.array_equal(a, b, equal_nan=True) else float("inf")
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), 1e-30)
    return float(np.abs(a - b).max(initial=0.0) / scale)
