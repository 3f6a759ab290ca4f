"""Generalisation: fit on training data, choose on validation data, report on test data.

A model with too little capacity under-fits (high training and validation error); one with too
much over-fits (training error keeps falling while validation error rises). Polynomials of
growing degree fitted by least squares show both; early stopping picks the epoch (or the
capacity) where the validation error was lowest, and never looks at the test split.
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray


def split(n: int, validation: float, test: float, seed: int = 0) -> tuple[Array, Array, Array]:
    """Shuffled indices of the training, validation and test parts of n examples."""
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_val = round(test * n), round(validation * n)
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


def fit_polynomial(x: Array, y: Array, degree: int) -> Array:
    """Least-squares coefficients c of y ≈ Σ_k c_k x^k, k = 0 … degree."""
    return np.linalg.lstsq(np.vander(x, degree + 1, increasing=True), y, rcond=None)[0]


def polynomial_error(coefficients: Array, x: Array, y: Array) -> float:
    """Mean squared error of the polynomial on (x, y)."""
    return float(
        ((np.vander(x, len(coefficients), increasing=True) @ coefficients - y) ** 2).mean()
    )


class EarlyStopping:
    """Stop after `patience` epochs without an improvement larger than `min_delta` (lower is
    better), remembering the best epoch: the rule of dlab's `train.early_stopping`."""

    def __init__(self, patience: int = 3, min_delta: float = 0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0

    def step(self, epoch: int, value: float) -> bool:
        """Record the epoch's validation value; True when training should stop."""
        if self.best is None or value < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience
