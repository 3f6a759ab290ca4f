"""What the training loop keeps besides the model: where it is, what it has logged, and the
running sums of the current epoch and logging interval."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dlab.training.metrics import IGNORE


@dataclass
class TrainState:
    """Where training is; saved in every checkpoint."""

    epoch: int = 0  # current epoch, 0-based
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # optimizer steps done in total
    samples: int = 0  # training samples seen in total
    elapsed_s: float = 0.0  # training wall time across resumes
    log_lines: int = 0  # lines of metrics.jsonl that belong to this state
    stop_reason: str | None = None


class History:
    """Epoch records of a fit; `history["val_accuracy"]` is that metric per epoch."""

    def __init__(self, records: Sequence[dict[str, Any]] = ()):
        self.records = [dict(r) for r in records]

    def __getitem__(self, key: str) -> list[float]:
        return [r[key] for r in self.records if key in r]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def last(self) -> dict[str, Any]:
        """The final epoch's record (empty if no epoch finished)."""
        return self.records[-1] if self.records else {}

    def __repr__(self) -> str:
        return f"History({len(self)} epochs, last={self.last})"


class Tally:
    """Training loss (and accuracy, for tasks that score it) summed on the device.

    A handful of in-place device ops per step and no host sync: on small models each extra tiny
    op is a visible share of the step (the overhead benchmark measures it). A NaN or inf loss
    poisons the float64 epoch sum, which `nonfinite` reads when the trainer logs or saves.
    """

    SAVED = ("epoch_loss", "epoch_correct", "epoch_scored", "interval_loss", "nonfinite")

    def __init__(self, device: torch.device, scores_accuracy: bool, padded_targets: bool):
        self.device, self.scores_accuracy, self.padded_targets = (
            device,
            scores_accuracy,
            padded_targets,
        )
        self.reset_epoch()
        self.reset_interval()

    def reset_interval(self) -> None:
        self.interval_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.interval_steps = 0

    def reset_epoch(self) -> None:
        self.epoch_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.epoch_correct = torch.zeros((), dtype=torch.long, device=self.device)
        self.epoch_scored = torch.zeros((), dtype=torch.long, device=self.device)
        self.epoch_count = 0
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)

    def add(self, loss: torch.Tensor, outputs: Any, targets: torch.Tensor, share: float) -> None:
        """One micro-batch: its mean loss over `targets`, worth `share` of this step's batch."""
        detached = loss.detach()
        self.epoch_loss.add_(detached, alpha=len(targets))
        self.interval_loss.add_(detached, alpha=share)
        if self.scores_accuracy:
            hits = outputs.detach().argmax(-1) == targets
            if self.padded_targets:  # padding of sequence targets (IGNORE) scores nothing
                scored = targets != IGNORE
                self.epoch_correct.add_((hits & scored).sum())
                self.epoch_scored.add_(scored.sum())
            else:
                self.epoch_correct.add_(hits.sum())
                self.epoch_scored.add_(len(targets))

    def check(self) -> torch.Tensor:
        """Has the epoch's loss gone NaN or infinite? (a device tensor; sticky until reset)"""
        self.nonfinite |= ~torch.isfinite(self.epoch_loss)
        return self.nonfinite

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: getattr(self, name) for name in self.SAVED}
        return {**state, "epoch_count": self.epoch_count, "interval_steps": self.interval_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.SAVED:
            setattr(self, name, state[name].to(self.device))
        self.epoch_count = int(state["epoch_count"])
        self.interval_steps = int(state["interval_steps"])
