"""Initialisation, and why it matters: keep every layer's output variance where it started.

For y = W x with n_in inputs, independent zero-mean weights and inputs:
    Var[y] = n_in · Var[w] · Var[x]
so Var[w] = 1/n_in keeps the variance (LeCun); Glorot/Xavier averages the forward and backward
fans, Var[w] = 2/(n_in + n_out), for tanh and sigmoid; He/Kaiming doubles LeCun's for ReLU,
Var[w] = 2/n_in, because ReLU zeroes half its inputs. Too small, and the signal (and gradient)
vanishes layer after layer; too large, and it explodes.
"""

from __future__ import annotations

import math

import numpy as np

Array = np.ndarray


def xavier_uniform(fan_in: int, fan_out: int, rng: np.random.Generator, gain: float = 1.0) -> Array:
    """W (fan_out, fan_in) ~ U(−a, a), a = gain·√(6 / (fan_in + fan_out)): variance 2/(in + out)."""
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=(fan_out, fan_in))


def kaiming_normal(fan_in: int, fan_out: int, rng: np.random.Generator) -> Array:
    """W (fan_out, fan_in) ~ N(0, 2/fan_in): He initialisation, for ReLU layers."""
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=(fan_out, fan_in))


def signal_through_depth(
    weights: list[Array], x: Array, activation: str = "relu"
) -> tuple[list[float], list[float]]:
    """The standard deviation of every layer's output for input x, and of the gradient that
    reaches every layer's input when the last layer's output receives a unit-variance gradient:
    how a signal fares forward, and back, through a deep stack."""
    act = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh}[activation]
    slope = {"relu": lambda z: (z > 0).astype(float), "tanh": lambda z: 1 - np.tanh(z) ** 2}[
        activation
    ]
    forward_std, pre = [], []
    for w in weights:
        z = x @ w.T
        pre.append(z)
        x = act(z)
        forward_std.append(float(x.std()))
    grad = np.random.default_rng(0).normal(size=x.shape)
    backward_std = []
    for w, z in zip(reversed(weights), reversed(pre), strict=True):
        grad = (grad * slope(z)) @ w
        backward_std.append(float(grad.std()))
    return forward_std, backward_std[::-1]
