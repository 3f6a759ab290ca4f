"""dlab: a deep-learning lab. Build, train, check, evaluate and explain the classic model families.

    import dlab
    run = dlab.train("mnist_cnn", ["train.epochs=3"])
    history = dlab.fit(model, (x, y), optimizer="adam", epochs=5)
    run = dlab.load("runs/mnist_cnn/<id>"); run.predict(["digit.png"])

Importing dlab sets OpenMP's wait policy (OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=30000)
before torch loads (see dlab.runtime): import dlab before torch, or set the variables yourself,
to get the fast thread policy.
"""

from __future__ import annotations

from typing import Any

from dlab import runtime as _runtime

_runtime.set_wait_policy()

__version__ = "0.2.0"  # the one place the version is written (pyproject reads it)

__all__ = ["DlabError", "History", "Recipe", "Run", "fit", "load", "load_recipe", "train"]

from dlab.errors import DlabError  # noqa: E402  (after the wait policy, which must precede torch)

_LAZY = {
    "train": "dlab.api",
    "fit": "dlab.api",
    "load": "dlab.api",
    "Run": "dlab.api",
    "History": "dlab.training.trainer",
    "Recipe": "dlab.recipe",
    "load_recipe": "dlab.recipe",
}


def __getattr__(name: str) -> Any:
    """Import the heavy parts (torch) only when they are used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dlab' has no attribute {name!r}")
