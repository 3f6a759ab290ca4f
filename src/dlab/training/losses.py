"""Training losses, registered by name, and the recipe's L1/L2 weight penalties."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from dlab.recipe import LossConfig
from dlab.registry import LOSSES
from dlab.training.metrics import IGNORE
from dlab.training.optim import decayed


class CrossEntropyConfig(LossConfig):
    """−Σ y log softmax(z), optionally against smoothed targets."""

    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="mix this much of a uniform distribution into targets"
    )
    ignore_index: int = Field(-100, description="target value that contributes no loss (padding)")


class CrossEntropy(nn.Module):
    """Cross-entropy over the last dimension; (B, T, V) logits are flattened for sequence models."""

    def __init__(self, label_smoothing: float = 0.0, ignore_index: int = -100):
        super().__init__()
        self.label_smoothing, self.ignore_index = label_smoothing, ignore_index

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.ndim > 2:
            logits, targets = (
                logits.reshape(-1, logits.shape[-1]),
                targets.reshape(-1),
            )  # (B·T, V), (B·T,)
        return F.cross_entropy(
            logits, targets, label_smoothing=self.label_smoothing, ignore_index=self.ignore_index
        )


class RegressionConfig(LossConfig):
    """A regression loss (no settings)."""


@LOSSES.register(
    "cross_entropy", config=CrossEntropyConfig, summary="classification; label smoothing optional"
)
def build_cross_entropy(config: CrossEntropyConfig) -> nn.Module:
    return CrossEntropy(config.label_smoothing, config.ignore_index)


@LOSSES.register("mse", config=RegressionConfig, summary="mean squared error (regression)")
def build_mse(config: RegressionConfig) -> nn.Module:
    return nn.MSELoss()


@LOSSES.register("mae", config=RegressionConfig, summary="mean absolute error (regression)")
def build_mae(config: RegressionConfig) -> nn.Module:
    return nn.L1Loss()


@LOSSES.register(
    "bce",
    config=RegressionConfig,
    summary="binary cross-entropy on logits (implicit feedback: interacted or not)",
)
def build_bce(config: RegressionConfig) -> nn.Module:
    return nn.BCEWithLogitsLoss()


class CTCConfig(LossConfig):
    """Connectionist temporal classification (Graves et al. 2006): −log Σ over every alignment of
    the frames to the target symbols, blanks and repeats collapsed."""

    blank: int = Field(0, ge=0, description="the output index of the blank symbol")


class CTC(nn.Module):
    """CTC over frame-wise logits (B, T, C) and targets (B, L) padded with IGNORE; every frame of
    every input counts. The loss of a sample is divided by its target length, then averaged."""

    def __init__(self, blank: int = 0):
        super().__init__()
        self.blank = blank

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        batch, frames = logits.shape[:2]
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, C)
        kept = targets != IGNORE
        return F.ctc_loss(
            log_probs,
            targets[kept],  # the targets concatenated
            torch.full((batch,), frames, dtype=torch.long),
            kept.sum(1),
            blank=self.blank,
            zero_infinity=True,  # a target longer than the frames can align: no gradient
        )


@LOSSES.register("ctc", config=CTCConfig, summary="CTC for frame-wise transcription (speech)")
def build_ctc(config: CTCConfig) -> nn.Module:
    return CTC(config.blank)


def weight_penalty(model: nn.Module, l1: float, l2: float) -> torch.Tensor | None:
    """λ₁·Σ|w| + (λ₂/2)·Σw² over weight matrices and kernels; None when both are zero.

    The ½ makes the L2 gradient exactly λ₂·w, the textbook equivalence with weight decay.
    """
    if not (l1 or l2):
        return None
    weights = [p for p in model.parameters() if p.requires_grad and decayed(p)]
    penalty = torch.zeros((), device=weights[0].device)
    if l1:
        penalty = penalty + l1 * sum(w.abs().sum() for w in weights)
    if l2:
        penalty = penalty + 0.5 * l2 * sum(w.pow(2).sum() for w in weights)
    return penalty
