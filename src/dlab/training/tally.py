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

    A step only keeps its detached loss and (where accuracy is scored) its detached outputs, or
    their argmax where the outputs are large: no device op for a small model, and no host sync.
    The sums are folded in at most every `FOLD` steps, and whenever they are read (a log line,
    the epoch's end, a checkpoint), in a few ops for all the steps at once. On small models
    each tiny op is a visible share of the step: summing every step in place cost the seed MLP
    about 5% of its speed (the overhead benchmark measures it). A NaN or inf loss poisons the
    float64 epoch sum, which `nonfinite` reads when the trainer logs or saves.
    """

    SAVED = ("epoch_loss", "epoch_correct", "epoch_scored", "interval_loss", "nonfinite")
    FOLD = 64  # steps kept before folding, so a long interval never holds much
    DEFERRED = 1 << 16  # outputs up to this many numbers are kept whole (≤ 16 MB per fold)

    def __init__(self, device: torch.device, scores_accuracy: bool, padded_targets: bool):
        self.device, self.scores_accuracy, self.padded_targets = (
            device,
            scores_accuracy,
            padded_targets,
        )
        self._losses: list[torch.Tensor] = []
        self._counts: list[int] = []  # samples behind each kept loss
        self._shares: list[float] = []  # and its share of its step's batch
        self._predictions: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self.reset_epoch()
        self.reset_interval()

    def reset_interval(self) -> None:
        self._fold()
        self._interval_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.interval_steps = 0

    def reset_epoch(self) -> None:
        self._fold()
        self._epoch_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self._epoch_correct = torch.zeros((), dtype=torch.long, device=self.device)
        self._epoch_scored = torch.zeros((), dtype=torch.long, device=self.device)
        self.epoch_count = 0
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)

    def add(self, loss: torch.Tensor, outputs: Any, targets: torch.Tensor, share: float) -> None:
        """One micro-batch: its mean loss over `targets`, worth `share` of this step's batch."""
        self._losses.append(loss.detach())
        self._counts.append(targets.shape[0])
        self._shares.append(share)
        if self.scores_accuracy:
            kept = outputs.detach()  # small outputs wait for the fold's one argmax
            self._predictions.append(kept if kept.numel() <= self.DEFERRED else kept.argmax(-1))
            self._targets.append(targets)
        if len(self._losses) >= self.FOLD:
            self._fold()

    def _fold(self) -> None:
        """Add the kept steps to the sums, in a few ops for all of them."""
        if not self._losses:
            return
        losses = torch.stack(self._losses).double()
        self._epoch_loss.add_(
            losses @ torch.tensor(self._counts, dtype=torch.float64, device=losses.device)
        )
        if all(share == 1 for share in self._shares):
            self._interval_loss.add_(losses.sum())
        else:
            self._interval_loss.add_(
                losses @ torch.tensor(self._shares, dtype=torch.float64, device=losses.device)
            )
        if self._predictions:
            predicted, targets = self._predicted()
            hits = predicted == targets
            if self.padded_targets:  # padding of sequence targets (IGNORE) scores nothing
                scored = targets != IGNORE
                self._epoch_correct.add_((hits & scored).sum())
                self._epoch_scored.add_(scored.sum())
            else:
                self._epoch_correct.add_(hits.sum())
                self._epoch_scored.add_(targets.numel())
        self._losses, self._counts, self._shares, self._predictions, self._targets = (
            [],
            [],
            [],
            [],
            [],
        )

    def _predicted(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kept steps' predicted classes and their targets, each flat and concatenated:
        one argmax for all the classification logits kept, in the common case."""
        kept, targets = self._predictions, self._targets
        if all(p.dim() == 2 and t.dim() == 1 for p, t in zip(kept, targets, strict=True)):
            return torch.cat(kept).argmax(-1), torch.cat(targets)
        classes = [
            (p.argmax(-1) if p.dim() > t.dim() else p).reshape(-1)
            for p, t in zip(kept, targets, strict=True)
        ]
        return torch.cat(classes), torch.cat([t.reshape(-1) for t in targets])

    @property
    def epoch_loss(self) -> torch.Tensor:
        """Σ over the epoch's samples of their loss (float64, on the device)."""
        self._fold()
        return self._epoch_loss

    @property
    def interval_loss(self) -> torch.Tensor:
        """Σ over the interval's steps of their mean loss."""
        self._fold()
        return self._interval_loss

    @property
    def epoch_correct(self) -> torch.Tensor:
        self._fold()
        return self._epoch_correct

    @property
    def epoch_scored(self) -> torch.Tensor:
        self._fold()
        return self._epoch_scored

    def check(self) -> torch.Tensor:
        """Has the epoch's loss gone NaN or infinite? (a device tensor; sticky until reset)"""
        self.nonfinite |= ~torch.isfinite(self.epoch_loss)
        return self.nonfinite

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: getattr(self, name) for name in self.SAVED}
        return {**state, "epoch_count": self.epoch_count, "interval_steps": self.interval_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._losses, self._counts, self._shares, self._predictions, self._targets = (
            [],
            [],
            [],
            [],
            [],
        )
        for name in self.SAVED:
            attribute = name if name == "nonfinite" else f"_{name}"
            setattr(self, attribute, state[name].to(self.device))
        self.epoch_count = int(state["epoch_count"])
        self.interval_steps = int(state["interval_steps"])
