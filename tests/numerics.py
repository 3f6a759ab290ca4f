"""Tolerances for comparing two training runs, derived from a measured same-arithmetic baseline.

Two runs that compute the same mathematics in a different order (another kernel, memory layout,
thread count or processor) agree after one step to float32 rounding, then drift apart as training
amplifies that rounding. How fast they drift depends on the model, the optimiser and the learning
rate, and differs between processors (Intel's AVX-512 kernels sum in another order than AMD's
AVX2 ones), so no fixed `rtol` holds everywhere. Instead each comparison measures, on the machine
it runs on, how far the reference run moves when every initial weight is moved by one float32
rounding, and accepts a run that stays within `factor` times that drift. A real bug (a wrong
gradient, a lost layer, a skipped step) moves a curve by orders of magnitude more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

ROUNDING = 2.0**-23  # float32's machine epsilon: one rounding of a weight near 1


@torch.no_grad()
def nudge_by_one_rounding(model: nn.Module, seed: int = 0) -> nn.Module:
    """Multiply every floating-point parameter by 1 ± 2^-23 (random signs): one rounding each."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        if parameter.is_floating_point():
            signs = torch.randint(0, 2, parameter.shape, generator=generator) * 2 - 1
            parameter.mul_(1 + ROUNDING * signs.to(parameter.dtype))
    return model


def relative_drift(curve: Sequence[float], reference: Sequence[float]) -> np.ndarray:
    """|curve - reference| / |reference|, element by element (the two must have one length)."""
    got, expected = np.asarray(curve, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    assert got.shape == expected.shape, f"{got.shape} values against {expected.shape}"
    return np.abs(got - expected) / np.maximum(np.abs(expected), np.finfo(np.float32).tiny)


def assert_within_measured_drift(
    got: Mapping[str, Sequence[float]],
    reference: Mapping[str, Sequence[float]],
    baseline: Mapping[str, Sequence[float]],
    keys: Iterable[str],
    factor: float = 20.0,
    floor: float = 1e-5,
    running: bool = True,
) -> None:
    """Each curve in `got` stays within `factor` × the drift of `baseline` from `reference`.

    `baseline` is the reference run repeated with one rounding of difference (see
    `nudge_by_one_rounding`). The allowed drift at record i is `factor` times the largest
    baseline drift up to i (drift grows, but one record may cross the reference by chance), and
    never less than `floor`, the rounding of a float32 loss summed over a few hundred samples.
    Where the drift grows by sudden jumps whose timing is itself chaotic (high-lr SGD with
    momentum), `running=False` allows `factor` times the baseline's largest drift everywhere.
    """
    for key in keys:
        drift = relative_drift(got[key], reference[key])
        measured = relative_drift(baseline[key], reference[key])
        measured = (
            np.maximum.accumulate(measured) if running else np.full_like(measured, measured.max())
        )
        allowed = np.maximum(factor * measured, floor)
        worst = int(np.argmax(drift / allowed))
        assert drift[worst] <= allowed[worst], (
            f"{key}[{worst}]: {got[key][worst]!r} vs {reference[key][worst]!r} is a relative "
            f"drift of {drift[worst]:.3g}, over the {allowed[worst]:.3g} allowed (the larger of "
            f"{factor:g}x the {measured[worst]:.3g} that the baseline "
            f"shows here, and {floor:g})"
        )
