"""The training loop. It reads top to bottom: for each epoch, for each batch, one optimizer step;
then validation, a record, and a checkpoint. Everything optional arrives as a callback.

Resuming is exact: the data order is a function of (seed, epoch), and a checkpoint holds the
weights, optimizer, scheduler, every RNG stream, the position inside the epoch and the running
sums of the epoch's metrics, so a run killed at any step and resumed ends bitwise identical
(on the CPU) to one that never stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlab import distributed, runtime
from dlab.data.bundle import DataBundle
from dlab.errors import TrainingDiverged, TrainingInterrupted
from dlab.recipe import TrainConfig
from dlab.registry import LOSSES
from dlab.tasks import task_of
from dlab.training.callbacks import Callback, EarlyStopping, ProgressBar, TensorBoard
from dlab.training.checkpoint import CheckpointStore
from dlab.training.losses import weight_penalty
from dlab.training.metrics import IGNORE, build_metrics, evaluate, forward, to_device
from dlab.training.optim import build_optimizer, build_scheduler
from dlab.training.state import rng_state, set_rng_state
from dlab.training.switches import checkpoint_activations


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


class _GracefulStop:
    """First SIGINT/SIGTERM asks the loop to stop after the current step; a second SIGINT aborts."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> _GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Trains `model` on `bundle` as `config` says; writes logs and checkpoints under `out_dir`."""

    def __init__(
        self,
        model: nn.Module,
        bundle: DataBundle,
        config: TrainConfig,
        *,
        seed: int = 0,
        out_dir: str | Path | None = None,
        recipe_yaml: str | None = None,
        callbacks: Sequence[Callback] = (),
        progress: bool = True,
        loss: nn.Module | None = None,
        privacy_steps: int | None = None,
    ):
        """`privacy_steps`: the steps a DP-SGD budget spans when this trainer runs only part of
        them (one federated round); default: this trainer's own steps."""
        self.config, self.seed, self.bundle = config, seed, bundle
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.recipe_yaml = recipe_yaml
        # in a torchrun job: one rank of several, each on its slice of every batch (DDP)
        self.dist = distributed.current()
        self.main = self.dist is None or self.dist.main
        self.device = runtime.resolve_device(config.device)
        if self.dist is not None:
            self.device = distributed.device_for(self.dist, self.device)
            if (
                self.dist.rank > 0
            ):  # the same weights (DDP broadcasts rank 0's), other dropout masks
                torch.manual_seed(seed + 1_000_003 * self.dist.rank)
        self._world = self.dist.world if self.dist is not None else 1
        if self._world > 1 or config.grad_accumulation > 1:
            distributed.check_batches(
                bundle.train.num_samples,
                bundle.train.batch_size,
                self._world,
                config.grad_accumulation,
            )
        self.model = model.to(self.device)
        self._layout = torch.channels_last if config.channels_last else None
        if self._layout is not None:
            self.model = self.model.to(memory_format=self._layout)
        if config.activation_checkpointing:
            checkpoint_activations(self.model, type(model).__name__)
        if config.compile:
            self.model.compile()  # in place: the weights keep their names in checkpoints
        self._autocast = (
            (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16))
            if config.precision == "bf16"
            else contextlib.nullcontext
        )
        self.train_loader = bundle.train.to(self.device)
        self.val_loader = bundle.val.to(self.device) if bundle.val is not None else None

        self.forward_flops = runtime.count_forward_flops(
            model, to_device(bundle.train.sample_batch()[0], self.device)
        )
        # after the FLOP count: FSDP must shard before any forward, and before the optimizer
        self._train_model = distributed.wrap(self.model, self.dist, self.device, config.parallel)
        self.sharded = self.dist is not None and config.parallel == "fsdp"  # each rank a slice
        self.threads = (
            runtime.choose_threads(config.threads, self.forward_flops)
            if self.device.type == "cpu"
            else torch.get_num_threads()
        )
        torch.set_num_threads(self.threads)

        self.loss_fn = (
            loss if loss is not None else LOSSES.build(config.loss)
        )  # distillation brings its own
        # e.g. distillation asks the teacher about each batch
        self._loss_needs_inputs = getattr(self.loss_fn, "needs_inputs", False)
        task = task_of(bundle.meta)
        self._scores_accuracy, self._padded_targets = task.scores_accuracy, task.padded_targets
        self.metrics = build_metrics(config.metrics, bundle.meta)
        self.optimizer = build_optimizer(config.optimizer, self.model)
        self.steps_per_epoch = len(self.train_loader)
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.privacy = None
        if config.privacy is not None:  # DP-SGD: Poisson batches, clipped and noised gradients
            from dlab.training.privacy import PrivateTraining, refuse_unsupported

            refuse_unsupported(self.model, config, self.train_loader, self.dist is not None)
            self.privacy = PrivateTraining(
                self.model,
                self.optimizer,
                self.train_loader,
                config,
                privacy_steps or self.total_steps,
            )
            self.train_loader = self.privacy.loader
            self._train_model, self.optimizer = self.privacy.model, self.privacy.optimizer
        self.scheduler = build_scheduler(
            config.scheduler,
            self.optimizer,
            self.total_steps,
            self.steps_per_epoch,
            config.warmup_steps,
        )

        self.state = TrainState()
        self.history = History()
        self.checkpoints = (
            CheckpointStore(self.out_dir / "checkpoints", config.keep_checkpoints)
            if self.out_dir
            else None
        )
        self.last_batch_size = 0
        self._clock = time.perf_counter()
        self._epoch_started, self._timed_samples = self._clock, 0
        self._reset_epoch_sums()
        self._reset_interval()

        self.callbacks: list[Callback] = []
        if progress and self.main:
            self.callbacks.append(ProgressBar())
        if self.out_dir is not None and self.main:
            self.callbacks.append(TensorBoard(str(self.out_dir / "tb")))
        self.early_stopping = (
            EarlyStopping(config.early_stopping) if config.early_stopping is not None else None
        )
        if self.early_stopping is not None:
            self.callbacks.append(self.early_stopping)
        self.callbacks.extend(callbacks)

    # --- the loop ---------------------------------------------------------------------------

    def fit(self) -> History:
        """Train until the epochs or max_steps are done, early stopping fires, or a signal arrives."""
        state = self.state
        previous_determinism = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(self.config.deterministic, warn_only=True)
        self._clock = time.perf_counter()
        try:
            with _GracefulStop() as stop:
                self._call("on_fit_start")
                while state.epoch < self.epochs and state.stop_reason is None:
                    self._epoch_started, self._timed_samples = time.perf_counter(), 0
                    for batch in self._batches():
                        self._train_step(batch)
                        self._call("on_step_end")
                        if self.checkpoints and state.step % self.config.checkpoint_every == 0:
                            self.save_checkpoint()
                        if self._stop_requested(stop):
                            self._interrupt(stop.received or signal.SIGTERM)
                    self._end_epoch()
                self._call("on_fit_end")
        finally:
            torch.use_deterministic_algorithms(previous_determinism)
            self._close_callbacks()
            self._tick()
        return self.history

    def _stop_requested(self, stop: _GracefulStop) -> bool:
        """A signal arrived here (or, in a job, at any rank: all stop after the same step)."""
        if self.dist is None:
            return stop.received is not None
        flag = torch.tensor([stop.received is not None], dtype=torch.int32)
        return bool(distributed.all_reduce(flag, self.dist, "max"))

    def _batches(self) -> Iterator[Any]:
        """The rest of the current epoch's batches, stopping at max_steps."""
        for batch in self.train_loader.epoch(self.state.epoch, start=self.state.batch):
            if self.state.step >= self.total_steps:
                return
            yield batch

    def _train_step(self, batch: Any) -> None:
        global_size = len(batch[1])
        if self.dist is not None:  # this rank's contiguous chunk of the global batch
            batch = distributed.take(batch, self.dist.rank, self.dist.world)
        inputs, targets = to_device(batch[0], self.device), to_device(batch[1], self.device)
        if self._layout is not None and isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=self._layout)
        if not self.model.training:  # evaluation switched it: walk the modules only then
            self._train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        parts = self.config.grad_accumulation
        if parts == 1:
            micro = [(inputs, targets)]
        else:  # micro-batches: contiguous chunks, so their gradients add up to the batch's
            micro = list(
                zip(
                    distributed.take_all(inputs, parts),
                    distributed.take_all(targets, parts),
                    strict=True,
                )
            )
        last = len(micro) - 1
        for i, (x, y) in enumerate(micro):
            # each micro-batch's mean loss weighs by its share of the global batch; DDP then
            # averages over ranks, so the sum is the global batch's mean loss
            weight = len(y) * self._world / global_size
            with distributed.no_sync(self._train_model, i == last), self._autocast():
                outputs = forward(self._train_model, x)
                if self._loss_needs_inputs:
                    loss = self.loss_fn(outputs, y, x)
                else:
                    loss = self.loss_fn(outputs, y)
            objective = loss * weight if weight != 1 else loss
            if i == 0:
                penalty = weight_penalty(self.model, self.config.l1, self.config.l2)
                if penalty is not None:
                    objective = objective + penalty
            objective.backward()
            self._add_to_sums(loss, outputs, y, len(y) / len(targets))
        n = len(targets)
        self._epoch_count += n
        self._timed_samples += global_size
        self.last_batch_size = n

        state = self.state
        logging_now = (state.step + 1) % self.config.log_every == 0
        grad_norm = None
        if self.config.grad_clip is not None:
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        elif logging_now:
            grad_norm = (
                nn.utils.clip_grad_norm_(self.model.parameters(), math.inf)  # DTensor-aware
                if self.sharded
                else _grad_norm(self.model)
            )
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self._interval_steps += 1
        state.step += 1
        state.batch += 1
        state.samples += global_size
        if logging_now:
            self._check_finite()
            record = {
                "kind": "step",
                "epoch": state.epoch + 1,
                "step": state.step,
                "loss": self._global_mean(self._interval_loss, self._interval_steps),
                "lr": lr,
            }
            if grad_norm is not None:
                full = getattr(grad_norm, "full_tensor", None)  # a sharded model's norm
                record["grad_norm"] = float(full() if full is not None else grad_norm)
            self._log(record)
            self._reset_interval()

    def _add_to_sums(
        self, loss: torch.Tensor, outputs: Any, targets: torch.Tensor, share: float
    ) -> None:
        # a handful of in-place device ops per step and no host sync: on small models each extra
        # tiny op is a visible share of the step (the overhead benchmark measures it); a NaN or
        # inf loss poisons the float64 epoch sum, which _check_finite reads when logging/saving
        detached = loss.detach()
        self._epoch_loss.add_(detached, alpha=len(targets))
        self._interval_loss.add_(detached, alpha=share)
        if self._scores_accuracy:
            hits = outputs.detach().argmax(-1) == targets
            if self._padded_targets:  # padding of sequence targets (IGNORE) scores nothing
                scored = targets != IGNORE
                self._epoch_correct.add_((hits & scored).sum())
                self._epoch_scored.add_(scored.sum())
            else:
                self._epoch_correct.add_(hits.sum())
                self._epoch_scored.add_(len(targets))

    def _end_epoch(self) -> None:
        """Validate, write the epoch record, let callbacks react, advance, checkpoint."""
        state = self.state
        if state.batch == 0:
            return  # nothing trained in this epoch (max_steps fell on its boundary)
        self._check_finite()
        seconds = time.perf_counter() - self._epoch_started
        count = max(int(self._epoch_count), 1)
        record: dict[str, Any] = {"kind": "epoch", "epoch": state.epoch + 1, "step": state.step}
        record["train_loss"] = self._global_mean(self._epoch_loss, count)
        if self._scores_accuracy:
            record["train_accuracy"] = self._global_mean(
                self._epoch_correct, self._epoch_scored.clamp_min(1)
            )
        if self.val_loader is not None:
            record.update(
                evaluate(
                    self.model,
                    self.val_loader,
                    self.loss_fn,
                    self.metrics,
                    self.device,
                    prefix="val_",
                )
            )
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.privacy is not None:
            record["epsilon"] = self.privacy.epsilon()
        record["time_s"] = seconds
        record["samples_per_s"] = self._timed_samples / max(seconds, 1e-9)
        record["elapsed_s"] = self._tick()
        self._log(record)
        self.history.records.append(record)
        self._call("on_epoch_end", record)
        # an epoch cut short by max_steps keeps its place: a run resumed with more steps
        # finishes that epoch's batches instead of skipping to the next epoch
        if state.batch >= self.steps_per_epoch:
            state.epoch, state.batch = state.epoch + 1, 0
        if state.step >= self.total_steps and state.stop_reason is None:
            state.stop_reason = "completed"
        self._reset_epoch_sums()
        if self.checkpoints:
            self.save_checkpoint()

    def _interrupt(self, signum: int) -> None:
        where = f"step {self.state.step} (epoch {self.state.epoch + 1}, batch {self.state.batch})"
        if self.checkpoints:
            folder = self.save_checkpoint()
            raise TrainingInterrupted(
                f"{signal.Signals(signum).name}: stopped at {where}; checkpoint {folder}"
            )
        raise TrainingInterrupted(
            f"{signal.Signals(signum).name}: stopped at {where}; no checkpoint (no run folder)"
        )

    # --- small helpers ------------------------------------------------------------------------

    def steps_in_epoch(self, epoch: int) -> int:
        """Optimizer steps in `epoch` (the last may be cut short by max_steps)."""
        return min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)

    def interval_loss(self) -> float:
        """Mean training loss since the last step record (synchronises with the device)."""
        return (self._interval_loss / max(self._interval_steps, 1)).item()

    def epoch_loss(self) -> float:
        """Mean training loss of the current epoch so far (synchronises with the device)."""
        return (self._epoch_loss / max(self._epoch_count, 1)).item()

    def _global_mean(self, total: torch.Tensor, count: torch.Tensor | int) -> float:
        """total / count, each summed over the ranks of a job (synchronises with the device)."""
        if self.dist is None:
            return (total.double() / count).item()
        count = torch.as_tensor(count, device=total.device)
        pair = distributed.all_reduce(torch.stack([total.double(), count.double()]), self.dist)
        return (pair[0] / pair[1]).item()

    def _reset_interval(self) -> None:
        self._interval_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self._interval_steps = 0

    def _reset_epoch_sums(self) -> None:
        self._epoch_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self._epoch_correct = torch.zeros((), dtype=torch.long, device=self.device)
        self._epoch_scored = torch.zeros((), dtype=torch.long, device=self.device)
        self._epoch_count = 0
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)

    def _tick(self) -> float:
        """Add the wall time since the last tick to state.elapsed_s and return the total."""
        now = time.perf_counter()
        self.state.elapsed_s += now - self._clock
        self._clock = now
        return self.state.elapsed_s

    def _check_finite(self) -> None:
        self._nonfinite |= ~torch.isfinite(self._epoch_loss)
        if self.dist is not None:  # every rank raises together, none waits on a collective
            self._nonfinite = distributed.all_reduce(self._nonfinite.int(), self.dist, "max").bool()
        if bool(self._nonfinite):
            last = self.checkpoints.latest() if self.checkpoints else None
            kept = (
                f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
            )
            raise TrainingDiverged(
                f"the training loss became NaN or infinite by step {self.state.step} (epoch {self.state.epoch + 1}); "
                f"{kept}; try a smaller train.optimizer.lr (now {self.config.optimizer.lr:g}) or set train.grad_clip"
            )

    def _log(self, record: dict[str, Any]) -> None:
        if self.out_dir is not None and self.main:
            with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        self.state.log_lines += 1
        self._call("on_log", record)

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def _close_callbacks(self) -> None:
        for callback in self.callbacks:
            close = getattr(callback, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    # --- checkpoints -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly from here, except the weights."""
        return {
            "trainer": asdict(self.state),
            "optimizer": (
                distributed.full_optimizer_state(self.model, self.optimizer)
                if self.sharded
                else self.optimizer.state_dict()
            ),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "sums": {
                "epoch_loss": self._epoch_loss,
                "epoch_correct": self._epoch_correct,
                "epoch_scored": self._epoch_scored,
                "epoch_count": self._epoch_count,
                "interval_loss": self._interval_loss,
                "interval_steps": self._interval_steps,
                "nonfinite": self._nonfinite,
            },
            "threads": self.threads,
            "history": self.history.records,
            # by class name: a callback's state goes back to the callback of the same kind
            "callbacks": {
                type(c).__name__: c.state_dict() for c in self.callbacks if c.state_dict()
            },
            **({"privacy": self.privacy.state_dict()} if self.privacy is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of state_dict (weights are loaded separately)."""
        names = {f.name for f in fields(TrainState)}
        self.state = TrainState(**{k: v for k, v in state["trainer"].items() if k in names})
        saved = state["optimizer"]
        if self.sharded or any(isinstance(k, str) for k in saved.get("state", {})):
            distributed.load_optimizer_state(self.model, self.optimizer, saved)  # by name
        else:
            self.optimizer.load_state_dict(saved)
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        sums = state["sums"]
        self._epoch_loss = sums["epoch_loss"].to(self.device)
        self._epoch_correct = sums["epoch_correct"].to(self.device)
        self._epoch_scored = sums["epoch_scored"].to(self.device)
        self._epoch_count = int(sums["epoch_count"])
        self._interval_loss = sums["interval_loss"].to(self.device)
        self._interval_steps = int(sums["interval_steps"])
        self._nonfinite = sums["nonfinite"].to(self.device)
        self.threads = int(state.get("threads", self.threads))
        torch.set_num_threads(self.threads)
        self.history = History(state.get("history", []))
        # checkpoints from before 2026-12 kept early stopping's state among the trainer's
        saved = state.get("callbacks", {"EarlyStopping": state["trainer"]})
        for callback in self.callbacks:
            if type(callback).__name__ in saved:
                callback.load_state_dict(saved[type(callback).__name__])
        if self.privacy is not None:
            self.privacy.load_state_dict(state["privacy"])

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current state (refuses if the loss has gone non-finite)."""
        if self.checkpoints is None:
            return None
        self._check_finite()
        self._tick()
        # FSDP: every rank sends its slices to rank 0 (collectives); DDP: rank 0 has it all
        weights = distributed.full_model_state(self.model) if self.sharded else self.model
        state = self.state_dict()
        if not self.main:
            return None
        return self.checkpoints.save(weights, state, self.recipe_yaml)

    def resume(self, folder: Path) -> None:
        """Continue from the checkpoint in `folder`; later metrics.jsonl lines are dropped."""
        if self.sharded:  # every rank reads the whole weights and keeps its slice
            from safetensors.torch import load_file

            distributed.load_model_state(self.model, load_file(str(folder / "model.safetensors")))
            self.load_state_dict(CheckpointStore.load_state(folder))
        else:
            self.load_state_dict(CheckpointStore.load(folder, self.model))
        if self.state.stop_reason == "completed" and self.state.step < self.total_steps:
            self.state.stop_reason = None  # the run was given more epochs or steps
        if self.dist is not None and not self.main:  # the RNG saved is rank 0's: draw others
            torch.manual_seed(self.seed + 1_000_003 * self.dist.rank + self.state.step)
        if self.out_dir is not None and self.main:
            log = self.out_dir / "metrics.jsonl"
            if log.exists():
                lines = log.read_text(encoding="utf-8").splitlines(keepends=True)[
                    : self.state.log_lines
                ]
                log.write_text("".join(lines), encoding="utf-8")


def _grad_norm(model: nn.Module) -> torch.Tensor:
    """The global L2 norm of all gradients."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
