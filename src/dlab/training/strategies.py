"""How a training step runs, apart from what it computes: the trainer's plug-ins.

The loop in `trainer.py` says *what* happens each step (forward, loss, backward, step); these
small objects say *how*, in the manner of Lightning's Strategy and Precision plug-ins:

- a `Strategy` places the work: `Single` (one process), `DataParallel` (DDP: each rank takes its
  chunk of the global batch and gradients are averaged), `FullySharded` (FSDP2: each rank also
  holds a slice of the weights and optimizer state);
- `Precision` runs the forward in fp32 or under bf16 autocast, in channels_last layout or not;
- `Accumulation` cuts a batch into micro-batches whose weighted gradients add up to the batch's;
- DP-SGD (`privacy.PrivateTraining`) wraps the model, optimizer and loader.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlab import runtime
from dlab.training import distributed
from dlab.training.checkpoint import CheckpointStore


class Single:
    """One process on one device: every collective is the identity."""

    context: distributed.Context | None = None
    rank, world, main, sharded = 0, 1, True, False

    def __init__(self, device: torch.device):
        self.device = device

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module that runs the training forward."""
        return model

    def shard(self, batch: Any) -> Any:
        """This process's part of a global batch."""
        return batch

    def sync(self, train_model: nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        """Around a micro-batch's forward and backward: gradients cross processes on the last."""
        return contextlib.nullcontext()

    def global_mean(self, total: torch.Tensor, count: torch.Tensor | int) -> float:
        """total / count, each summed over the processes (synchronises with the device)."""
        return (total.double() / count).item()

    def any(self, flag: torch.Tensor | bool) -> bool:
        """True if `flag` is true in any process (all processes then agree)."""
        return bool(flag)

    def grad_norm(self, model: nn.Module) -> torch.Tensor:
        """The global L2 norm of all gradients, without clipping."""
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return torch.zeros(())
        # every tensor's norm in one foreach op (what clip_grad_norm_ uses), then their norm
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))

    def optimizer_state(self, model: nn.Module, optimizer: Any) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state(self, model: nn.Module, optimizer: Any, saved: dict[str, Any]) -> None:
        if any(isinstance(k, str) for k in saved.get("state", {})):  # saved by an FSDP run
            distributed.load_optimizer_state(model, optimizer, saved)
        else:
            optimizer.load_state_dict(saved)

    def full_weights(self, model: nn.Module) -> nn.Module | dict[str, torch.Tensor]:
        """The whole model's weights, for a checkpoint or the final file (rank 0 writes)."""
        return model

    def load_checkpoint(self, model: nn.Module, folder: Path) -> dict[str, Any]:
        """Load the weights of the checkpoint in `folder` and return its training state."""
        return CheckpointStore.load(folder, model)

    def reseed(self, seed: int, step: int = 0) -> None:
        """Ranks other than 0 draw their own dropout masks (the weights are rank 0's)."""


class DataParallel(Single):
    """DDP in a torchrun job: same weights everywhere, each rank on its chunk of every batch."""

    main = property(lambda self: self.context.main)  # type: ignore[assignment]

    def __init__(self, context: distributed.Context, device: torch.device):
        super().__init__(distributed.device_for(context, device))
        self.context, self.rank, self.world = context, context.rank, context.world

    def wrap(self, model: nn.Module) -> nn.Module:
        return distributed.wrap(model, self.context, self.device, "ddp")

    def shard(self, batch: Any) -> Any:
        return distributed.take(batch, self.rank, self.world)

    def sync(self, train_model: nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
        return distributed.no_sync(train_model, last)

    def global_mean(self, total: torch.Tensor, count: torch.Tensor | int) -> float:
        count = torch.as_tensor(count, device=total.device)
        pair = distributed.all_reduce(torch.stack([total.double(), count.double()]), self.context)
        return (pair[0] / pair[1]).item()

    def any(self, flag: torch.Tensor | bool) -> bool:
        flag = torch.as_tensor(flag, dtype=torch.int32, device=self.device).reshape(1)
        return bool(distributed.all_reduce(flag, self.context, "max"))

    def reseed(self, seed: int, step: int = 0) -> None:
        if self.rank > 0:
            torch.manual_seed(seed + 1_000_003 * self.rank + step)


class FullySharded(DataParallel):
    """FSDP2: each rank also holds 1/N of the weights, gradients and optimizer state."""

    sharded = True

    def wrap(self, model: nn.Module) -> nn.Module:
        return distributed.wrap(model, self.context, self.device, "fsdp")

    def grad_norm(self, model: nn.Module) -> torch.Tensor:
        norm = nn.utils.clip_grad_norm_(model.parameters(), math.inf)  # DTensor-aware
        full = getattr(norm, "full_tensor", None)
        return full() if full is not None else norm

    def optimizer_state(self, model: nn.Module, optimizer: Any) -> dict[str, Any]:
        return distributed.full_optimizer_state(model, optimizer)  # a collective

    def load_optimizer_state(self, model: nn.Module, optimizer: Any, saved: dict[str, Any]) -> None:
        distributed.load_optimizer_state(model, optimizer, saved)  # by name

    def full_weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return distributed.full_model_state(model)  # a collective: every rank sends its slices

    def load_checkpoint(self, model: nn.Module, folder: Path) -> dict[str, Any]:
        from safetensors.torch import load_file  # every rank reads it all and keeps its slice

        distributed.load_model_state(model, load_file(str(folder / "model.safetensors")))
        return CheckpointStore.load_state(folder)


def strategy_for(device: str, parallel: str) -> Single:
    """The strategy for this process: `Single` unless torchrun started it as one of several."""
    context, where = distributed.current(), runtime.resolve_device(device)
    if context is None:
        return Single(where)
    return (FullySharded if parallel == "fsdp" else DataParallel)(context, where)


class Precision:
    """fp32 or bf16 autocast, in the default or channels_last memory layout."""

    def __init__(self, precision: str, channels_last: bool, device: torch.device):
        self.layout = torch.channels_last if channels_last else None
        self.autocast: Callable[[], contextlib.AbstractContextManager[Any]] = (
            (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
            if precision == "bf16"
            else contextlib.nullcontext
        )

    def model(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=self.layout) if self.layout is not None else model

    def inputs(self, inputs: Any) -> Any:
        if self.layout is not None and isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            return inputs.contiguous(memory_format=self.layout)
        return inputs


class Accumulation:
    """Gradient accumulation: a batch in `parts` contiguous micro-batches."""

    def __init__(self, parts: int):
        self.parts = parts

    def split(self, inputs: Any, targets: torch.Tensor) -> list[tuple[Any, torch.Tensor]]:
        if self.parts == 1:
            return [(inputs, targets)]
        chunks = zip(
            distributed.take_all(inputs, self.parts),
            distributed.take_all(targets, self.parts),
            strict=True,
        )
        return list(chunks)
