"""Lookahead on the weights (Zhang et al. 2019), in the form airbench uses: every few steps a slow
copy of the weights moves toward the fast ones, and the fast ones jump back to it.

    every `every` steps:   slow ← slow + (1 − d)·(fast − slow);   fast ← slow
    d = decay · (step / total_steps)^power

Early in training d is near 0 and the slow copy follows the weights; late, it averages them over
the last few hundred steps, like an exponential moving average whose end result is the model
itself. The last step copies the slow weights in, so the run ends on them. Batch-norm running
statistics are averaged with the weights (every floating-point entry of the state dict).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dlab.training.callbacks import Callback

if TYPE_CHECKING:
    from dlab.recipe import Lookahead as LookaheadConfig
    from dlab.training.trainer import Trainer


class Lookahead(Callback):
    """The slow weights, updated after every `every`-th step and after the last one."""

    def __init__(self, config: LookaheadConfig):
        self.config = config
        self.slow: dict[str, torch.Tensor] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.slow is None:  # a resumed run brought its own
            self.slow = {
                name: value.detach().clone()
                for name, value in trainer.model.state_dict().items()
                if value.is_floating_point()
            }

    def on_step_end(self, trainer: Trainer) -> None:
        step, total = trainer.state.step, trainer.total_steps
        if step >= total:
            self.pull(trainer.model, 1.0)  # end on the slow weights
        elif step % self.config.every == 0:
            self.pull(trainer.model, self.config.decay * (step / total) ** self.config.power)

    @torch.no_grad()
    def pull(self, model: nn.Module, decay: float) -> None:
        """slow ← lerp(slow, fast, 1 − decay); fast ← slow."""
        assert self.slow is not None
        for name, value in model.state_dict().items():
            slow = self.slow.get(name)
            if slow is not None:
                slow.lerp_(value, 1 - decay)
                value.copy_(slow)

    def state_dict(self) -> dict[str, Any]:
        return {"slow": dict(self.slow)} if self.slow is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.slow = {name: tensor.clone() for name, tensor in state["slow"].items()}
