"""Large-model switches that change how a step is computed, not what it computes.

Each is a recipe field (`train.activation_checkpointing`; `train.compile` and `train.grad_accumulation` live
in the trainer); the tests check each
against the plain path within a stated tolerance.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from dlab.errors import RecipeError


def _checkpointed(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    forward = type(module).forward
    if not torch.is_grad_enabled():  # evaluation and generation: nothing to save memory on
        return forward(module, *args, **kwargs)
    # non-reentrant checkpointing restores the RNG, so dropout draws the same masks again
    return checkpoint(forward, module, *args, use_reentrant=False, **kwargs)


def checkpoint_activations(model: nn.Module, model_name: str = "this model") -> int:
    """Recompute every checkpoint unit (a Transformer block) in the backward pass; return how many.

    Batch-norm blocks are not units: recomputing them would update the running statistics twice.
    The state dict keeps its keys (the forward is replaced on the instance, not wrapped).
    """
    units = [m for m in model.modules() if getattr(type(m), "checkpoint_unit", False)]
    if not units:
        raise RecipeError(
            f"train.activation_checkpointing: {model_name} has no Transformer blocks to recompute "
            "(gpt, transformer_classifier and seq2seq_transformer have)"
        )
    for unit in units:
        unit.forward = functools.partial(_checkpointed, unit)
    return len(units)
