"""Five hooks into the training loop, and the callbacks dlab itself is built from."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dlab.errors import RecipeError, did_you_mean
from dlab.training.checkpoint import load_weights, save_weights

if TYPE_CHECKING:
    from dlab.recipe import EarlyStopping as EarlyStoppingConfig
    from dlab.training.trainer import Trainer


class Callback:
    """Override the hooks you need; each receives the trainer, whose `state` says where it is."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first step (also after a resume)."""

    def on_step_end(self, trainer: Trainer) -> None:
        """After every optimizer step."""

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """When a step or epoch record is written to metrics.jsonl."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After validation at the end of each epoch (before the epoch's checkpoint)."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch, early stopping or max_steps; not after an error."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of this callback so that a resume continues it exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of state_dict."""


def format_record(record: dict[str, Any], keys: tuple[str, ...] = ()) -> str:
    """'train_loss 0.0312  val_accuracy 0.9880 ...' for the numeric metrics of a record."""
    skip = {"kind", "epoch", "step", "time_s", "elapsed_s", "samples_per_s"}
    parts = []
    for key in keys or tuple(record):
        value = record.get(key)
        if key in skip or not isinstance(value, int | float) or isinstance(value, bool):
            continue
        parts.append(f"{key} {value:.4g}" if key == "lr" else f"{key} {value:.4f}")
    return "  ".join(parts)


def logged_numbers(record: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """(name, value) of a record's finite numbers, as loggers chart them: `step/loss`,
    `epoch/val_accuracy` (the record's kind, then the key)."""
    for key, value in record.items():
        if key in ("kind", "step", "epoch") or isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(value):
            yield f"{record['kind']}/{key}", float(value)


class ProgressBar(Callback):
    """A rich progress bar per epoch (loss, samples/s, ETA); periodic plain lines when not a terminal."""

    def __init__(
        self, console: Console | None = None, refresh_s: float = 0.1, plain_every_s: float = 30.0
    ):
        self.console = console or Console(highlight=False)
        self.refresh_s, self.plain_every_s = refresh_s, plain_every_s
        self._progress: Progress | None = None
        self._task: Any = None
        self._last = 0.0
        self._epoch_start = 0.0
        self._epoch_samples = 0
        self._epoch = -1

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[speed]} samples/s"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
        self._start_epoch(trainer)

    def _start_epoch(self, trainer: Trainer) -> None:
        state = trainer.state
        self._epoch = state.epoch
        self._epoch_start = self._last = time.perf_counter()
        self._epoch_samples = 0
        label = f"{state.epoch + 1}/{trainer.epochs}"
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(
                "train",
                total=trainer.steps_in_epoch(state.epoch),
                completed=state.batch,
                epoch=label,
                loss="-",
                speed="-",
            )

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.state.epoch != self._epoch:
            self._start_epoch(trainer)
        self._epoch_samples += trainer.last_batch_size
        now = time.perf_counter()
        interval = self.refresh_s if self._progress is not None else self.plain_every_s
        if now - self._last < interval:
            return
        self._last = now
        state = trainer.state
        speed = self._epoch_samples / max(now - self._epoch_start, 1e-9)
        loss = trainer.epoch_loss()
        if self._progress is not None:
            self._progress.update(
                self._task, completed=state.batch, loss=f"{loss:.4f}", speed=f"{speed:,.0f}"
            )
        else:
            total = trainer.steps_in_epoch(state.epoch)
            left = (total - state.batch) * trainer.last_batch_size / max(speed, 1e-9)
            self.console.print(
                f"epoch {state.epoch + 1}/{trainer.epochs}  {100 * state.batch / total:3.0f}% ({state.batch}/{total})  "
                f"loss {loss:.4f}  {speed:,.0f} samples/s  eta {left:.0f}s",
                soft_wrap=True,
            )

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        speed = record.get("samples_per_s")
        tail = f"  {speed:,.0f} samples/s  {record['time_s']:.1f}s" if speed else ""
        line = f"epoch {record['epoch']}/{trainer.epochs}  {format_record(record)}{tail}"
        console = self._progress.console if self._progress is not None else self.console
        console.print(line, soft_wrap=True)

    def on_fit_end(self, trainer: Trainer) -> None:
        self.close()

    def close(self) -> None:
        """Stop drawing (also called when training fails)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class TensorBoard(Callback):
    """Every record's numbers as TensorBoard scalars in <run>/tb (`tensorboard --logdir runs`)."""

    def __init__(self, log_dir: str):
        self.log_dir = log_dir
        self._writer: Any = None

    def on_fit_start(self, trainer: Trainer) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a dependency, but a stripped install must still train
            warnings.warn("tensorboard is not installed; no event files are written", stacklevel=2)
            return
        # purge_step drops events a killed run wrote after its last checkpoint
        self._writer = SummaryWriter(self.log_dir, purge_step=trainer.state.step or None)

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self._writer is None:
            return
        for name, value in logged_numbers(record):
            self._writer.add_scalar(name, value, record["step"])

    def on_fit_end(self, trainer: Trainer) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved for `patience` epochs; optionally restore the best weights.

    It owns its state: the best value and its epoch, the epochs since (saved in every checkpoint
    through `state_dict`), and the best weights (best.safetensors in a run folder, else memory).
    """

    def __init__(self, config: EarlyStoppingConfig):
        self.config = config
        self.direction = config.direction()
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self._best_weights: dict[str, torch.Tensor] | None = None

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        delta = self.config.min_delta
        return value < self.best - delta if self.direction == "min" else value > self.best + delta

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        monitor = self.config.monitor
        if monitor not in record:
            names = [k for k, v in record.items() if isinstance(v, float)]
            raise RecipeError(
                f"train.early_stopping.monitor: '{monitor}' is not a logged metric{did_you_mean(monitor, names)}; "
                f"logged: {', '.join(names)}"
            )
        value = float(record[monitor])
        if self._improved(value):
            self.best, self.best_epoch, self.bad_epochs = value, record["epoch"], 0
            if self.config.restore_best:
                self._save_best_weights(trainer)
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.config.patience:
                trainer.state.stop_reason = (
                    f"early stopping: {monitor} did not improve for {self.bad_epochs} epochs "
                    f"(best {self.best:.4f} at epoch {self.best_epoch})"
                )

    def on_fit_end(self, trainer: Trainer) -> None:
        if not self.config.restore_best or self.best_epoch is None:
            return
        if self._best_weights is not None:
            trainer.model.load_state_dict(self._best_weights)
        elif trainer.out_dir is not None:
            load_weights(trainer.model, trainer.out_dir / "best.safetensors")

    def _save_best_weights(self, trainer: Trainer) -> None:
        """On disk when there is a run folder; in memory without one, and on every rank of a job."""
        if trainer.out_dir is not None and trainer.main and not trainer.sharded:
            save_weights(trainer.model, trainer.out_dir / "best.safetensors")
        if trainer.out_dir is None or trainer.strategy.world > 1:
            self._best_weights = {
                k: v.detach().clone() for k, v in trainer.model.state_dict().items()
            }

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")
        self.bad_epochs = int(state.get("bad_epochs", 0))
