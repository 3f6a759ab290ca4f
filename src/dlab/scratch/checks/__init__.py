"""`dlab check`: every from-scratch formula (dlab.scratch, NumPy) against PyTorch, live.

`machinery.py` holds `compare`, `CheckResult` and the `CHECKS` registry; the layer and sequence
formulas' checks are in `formulas.py`, the optimizers' in `optimizers.py`, the practice formulas' (1-D convolution, clipping,
running statistics, beam search, LoRA, compression, DP-SGD) in `practice.py`. The checks sit
in their own package because they import torch, which the NumPy formulas in dlab/scratch never
do.

For each formula and a few random configurations: the forward output against torch's, the
hand-written gradients against torch autograd (same upstream gradient), and against central
finite differences, all in float64. Optimizers are compared as 100-step parameter trajectories.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dlab.errors import DlabError, did_you_mean

# the order of these imports is the order `dlab check` prints the checks in
from dlab.scratch.checks import formulas, optimizers, practice  # noqa: F401  (they register)
from dlab.scratch.checks.machinery import (
    CHECKS,
    FD_TOLERANCE,
    TOLERANCE,
    CheckResult,
    check,
    compare,
    raised,
)
from dlab.scratch.checks.optimizers import OPTIMIZERS, optimizer_trajectory_error

__all__ = [
    "CHECKS",
    "FD_TOLERANCE",
    "OPTIMIZERS",
    "TOLERANCE",
    "CheckResult",
    "check",
    "compare",
    "optimizer_trajectory_error",
    "run_checks",
]


def run_checks(names: Sequence[str] = (), seed: int = 0) -> list[CheckResult]:
    """Run the named checks (all by default) and return their results."""
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise DlabError(
            f"check: no formula called '{unknown[0]}'{did_you_mean(unknown[0], CHECKS)}; see `dlab check --list`"
        )
    return [_run(name, seed) for name in (names or CHECKS)]


def _run(name: str, seed: int) -> CheckResult:
    """One check; code that raises outside `compare`'s guard (a learner's, say) fails it with
    a line saying what was raised and where, instead of a traceback."""
    try:
        return CHECKS[name][1](np.random.default_rng(seed))
    except Exception as error:
        result = CheckResult(name, CHECKS[name][0], forward=math.inf)
        result.gradient = result.finite_difference = math.nan
        result.problems.append(f"the check raised {raised(error)}")
        return result
