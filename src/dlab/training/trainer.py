"""The training loop. It reads top to bottom: for each epoch, for each batch, one optimizer step;
then validation, a record, and a checkpoint. Everything optional arrives as a callback.

Resuming is exact: the data order is a function of (seed, epoch), and a checkpoint holds the
weights, optimizer, scheduler, every RNG stream, the position inside the epoch and the running
sums of the epoch's metrics, so a run killed at any step and resumed ends bitwise identical
(on the CPU) to one that never stopped.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlab import runtime
from dlab._io import atomic_write_text
from dlab.data.bundle import DataBundle, TensorLoader
from dlab.errors import TrainingDiverged, TrainingInterrupted
from dlab.recipe import TrainConfig
from dlab.registry import LOSSES
from dlab.tasks import task_of
from dlab.training import distributed
from dlab.training.callbacks import Callback, EarlyStopping, ProgressBar, TensorBoard
from dlab.training.checkpoint import CheckpointStore
from dlab.training.lookahead import Lookahead
from dlab.training.losses import weight_penalty
from dlab.training.metrics import build_metrics, evaluate, forward, to_device
from dlab.training.optim import build_optimizer, build_scheduler
from dlab.training.signals import GracefulStop
from dlab.training.state import rng_state, set_rng_state
from dlab.training.strategies import Accumulation, Precision, Single, strategy_for
from dlab.training.switches import checkpoint_activations
from dlab.training.tally import History, Tally, TrainState

__all__ = ["History", "TrainState", "Trainer"]


class Trainer:
    """Trains `model` on `bundle` as `config` says; writes logs and checkpoints under `out_dir`.

    `loss` replaces the recipe's loss (distillation brings one that asks the teacher).
    """

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
    ):
        self.config, self.seed, self.bundle, self.recipe_yaml = config, seed, bundle, recipe_yaml
        self.out_dir = Path(out_dir) if out_dir is not None else None
        # where and how each step runs: one process or a rank of a torchrun job (DDP/FSDP),
        # fp32 or bf16, channels_last or not, whole batches or micro-batches
        self.strategy = strategy = strategy_for(config.device, config.parallel)
        self.device, self.main, self.sharded = strategy.device, strategy.main, strategy.sharded
        if self.out_dir is not None and self.main:  # metrics.jsonl and checkpoints go there
            self.out_dir.mkdir(parents=True, exist_ok=True)
        strategy.reseed(seed)
        self.precision = Precision(config.precision, config.channels_last, self.device)
        self.accumulation = Accumulation(config.grad_accumulation)
        if strategy.world > 1 or config.grad_accumulation > 1:
            n, size = bundle.train.num_samples, bundle.train.batch_size
            distributed.check_batches(n, size, strategy.world, config.grad_accumulation)

        self.train_loader = bundle.train.to(self.device)
        self.val_loader = bundle.val.to(self.device) if bundle.val is not None else None
        self.steps_per_epoch = len(self.train_loader)
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        self.epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self._place(model)
        self._model_hooks()

        self.loss_fn = loss if loss is not None else LOSSES.build(config.loss)
        self._loss_needs_inputs = getattr(self.loss_fn, "needs_inputs", False)
        self.metrics = build_metrics(config.metrics, bundle.meta)
        self.optimizer = build_optimizer(config.optimizer, self.model)
        self.privacy = self._private() if config.privacy is not None else None
        self.scheduler = self._schedule()
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self._penalised = bool(config.l1 or config.l2)
        self._plain = self._plain_steps()

        self.state, self.history = TrainState(), History()
        task = task_of(bundle.meta)
        self.tally = Tally(self.device, task.scores_accuracy, task.padded_targets)
        self.checkpoints = None
        if self.out_dir is not None:
            store = self.out_dir / "checkpoints"
            self.checkpoints = CheckpointStore(store, config.keep_checkpoints)
        self.last_batch_size, self._timed_samples = 0, 0
        self._clock = self._epoch_started = time.perf_counter()
        self.callbacks = self._callbacks(progress, callbacks)

    def _schedule(self) -> Any:
        """The recipe's schedule; none for a constant rate with no warm-up, since building one
        wraps optimizer.step with a step counter, a cost on every step for nothing."""
        config = self.config
        if config.scheduler.name == "constant" and not config.warmup_steps:
            return None
        return build_scheduler(
            config.scheduler,
            self.optimizer,
            self.total_steps,
            self.steps_per_epoch,
            config.warmup_steps,
        )

    def _plain_steps(self) -> bool:
        """Whether every step can take the fast path: one process, fp32, one tensor in, on the
        device already, no accumulation, no penalty, a loss of outputs and targets only. Small
        models spend much of a step in Python; the overhead benchmark compares dlab with a
        hand-written loop."""
        config = self.config
        return (
            type(self.strategy) is Single
            and config.precision == "fp32"
            and not config.channels_last
            and config.grad_accumulation == 1
            and isinstance(self.train_loader, TensorLoader)
            and isinstance(self.train_loader.inputs, torch.Tensor)
            and not (self._penalised or self._batch_penalty or self._loss_needs_inputs)
        )

    def _callbacks(self, progress: bool, extra: Sequence[Callback]) -> list[Callback]:
        """The progress bar and TensorBoard (rank 0), early stopping, then the caller's."""
        self.early_stopping = None
        if self.config.early_stopping is not None:
            self.early_stopping = EarlyStopping(self.config.early_stopping)
        own: list[Callback | None] = [
            ProgressBar() if progress and self.main else None,
            TensorBoard(str(self.out_dir / "tb"))
            if self.out_dir and self.main and "tensorboard" in self.config.loggers
            else None,
            Lookahead(self.config.lookahead) if self.config.lookahead is not None else None,
            self.early_stopping,
        ]
        return [c for c in own if c is not None] + list(extra)

    def _model_hooks(self) -> None:
        """What a model may ask of training: to read the training data before the first step
        (AutoRec's rating columns), a regulariser over what each batch touches (a recommender's
        embedding rows)."""
        see = getattr(self.model, "see_training_data", None)
        if see is not None:
            inputs, targets = zip(*self.train_loader.epoch(0), strict=True)
            see(torch.cat(inputs), torch.cat(targets))
        self._batch_penalty = getattr(self.model, "batch_penalty", None)

    def _place(self, model: nn.Module) -> None:
        """The model on its device, in its layout, compiled, wrapped; the threads it runs on."""
        config = self.config
        self.model = self.precision.model(model.to(self.device))
        if config.activation_checkpointing:
            checkpoint_activations(self.model, type(model).__name__)
        sample = to_device(self.bundle.train.sample_batch()[0], self.device)
        self.forward_flops = runtime.count_forward_flops(model, sample)
        self.threads, self.thread_timings = torch.get_num_threads(), None
        if self.device.type == "cpu":  # timed where auto, alone and long, before compilation
            timed = self.strategy.world == 1 and self.total_steps >= runtime.TIMED_MIN_STEPS
            if config.threads == "auto" and timed and not runtime.pinned():
                self.thread_timings = runtime.time_threads(
                    model, self.precision.inputs(sample), context=self.precision.autocast
                )
            timings = self.thread_timings
            self.threads = runtime.choose_threads(config.threads, self.forward_flops, timings)
        torch.set_num_threads(self.threads)
        if config.compile:  # after the FLOP count: a frame first met under its dispatch mode
            # is marked for dynamo to skip, and the model then never compiles
            # the instance's forward, not Module.compile(): the weights keep their names in
            # checkpoints either way, but dynamo skips the frame Module.compile() wraps for
            # torch's own classes (an nn.Sequential model ran eagerly, uncompiled, on torch 2.13)
            self.model.forward = torch.compile(self.model.forward)
        self._train_model = self.strategy.wrap(self.model)  # FSDP shards before any forward

    def _private(self) -> Any:
        """DP-SGD: Poisson batches, and a model and optimizer that clip and noise gradients."""
        from dlab.training.privacy import PrivateTraining, refuse_unsupported

        config = self.config
        refuse_unsupported(self.model, config, self.train_loader, self.strategy.world > 1)
        steps = config.privacy.steps or self.total_steps
        privacy = PrivateTraining(self.model, self.optimizer, self.train_loader, config, steps)
        self.train_loader = privacy.loader
        self._train_model, self.optimizer = privacy.model, privacy.optimizer
        return privacy

    # --- the loop ---------------------------------------------------------------------------

    def fit(self) -> History:
        """Train until the epochs or max_steps are done, early stopping fires, or a signal arrives."""
        state = self.state
        previous_determinism = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(self.config.deterministic, warn_only=True)
        self._clock = time.perf_counter()
        try:
            with GracefulStop() as stop:
                self._call("on_fit_start")
                # per step, only the callbacks that do something then, and a collective stop
                # check only where there are other processes to agree with
                step_hooks = [
                    c.on_step_end
                    for c in self.callbacks
                    if getattr(type(c), "on_step_end", None) is not Callback.on_step_end
                ]
                stopping = self.strategy.any if self.strategy.world > 1 else bool
                while state.epoch < self.epochs and state.stop_reason is None:
                    self._epoch_started, self._timed_samples = time.perf_counter(), 0
                    for batch in self._batches():
                        self._train_step(batch)
                        for hook in step_hooks:
                            hook(self)
                        if self.checkpoints and state.step % self.config.checkpoint_every == 0:
                            self.save_checkpoint()
                        if stopping(stop.received is not None):
                            self._interrupt(stop.received or signal.SIGTERM)
                    self._end_epoch()
                self._call("on_fit_end")
        finally:
            torch.use_deterministic_algorithms(previous_determinism)
            self._close_callbacks()
            self._tick()
        return self.history

    def _batches(self) -> Iterator[Any]:
        """The rest of the current epoch's batches, stopping at max_steps."""
        left = max(self.total_steps - self.state.step, 0)
        return itertools.islice(
            self.train_loader.epoch(self.state.epoch, start=self.state.batch), left
        )

    def _train_step(self, batch: Any) -> None:
        """One optimizer step on one global batch (this process's share of it); the common
        case takes `_plain_step`, which does only what a hand-written loop does."""
        if self._plain:
            self._plain_step(*batch)
        else:
            self._general_step(batch)
        self._apply_step(batch[1].shape[0])

    def _plain_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """zero_grad, forward, loss, backward: the batch is already on the device."""
        if not self.model.training:  # evaluation switched it: walk the modules only then
            self._train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        outputs = self._train_model(x)
        loss = self.loss_fn(outputs, y)
        loss.backward()
        self.tally.add(loss, outputs, y, 1.0)
        self.tally.epoch_count += y.shape[0]

    def _general_step(self, batch: Any) -> None:
        """zero_grad and, for each micro-batch of this process's share, forward, loss (with
        its penalties) and backward, inside the strategy's and the precision's contexts."""
        strategy, tally = self.strategy, self.tally
        global_size = batch[1].shape[0]
        inputs, targets = (to_device(part, self.device) for part in strategy.shard(batch))
        if not self.model.training:
            self._train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        micro = self.accumulation.split(self.precision.inputs(inputs), targets)
        for i, (x, y) in enumerate(micro):
            # each micro-batch's mean loss weighs by its share of the global batch; DDP then
            # averages over ranks, so the sum is the global batch's mean loss
            weight = y.shape[0] * strategy.world / global_size
            with strategy.sync(self._train_model, i == len(micro) - 1), self.precision.autocast():
                outputs = forward(self._train_model, x)
                args = (outputs, y, x) if self._loss_needs_inputs else (outputs, y)
                loss = self.loss_fn(*args)
            objective = loss * weight if weight != 1 else loss
            if self._penalised and i == 0:  # L1/L2 on the weights, once per step
                objective = objective + weight_penalty(self.model, self.config.l1, self.config.l2)
            if self._batch_penalty is not None:  # a regulariser over what this batch reads
                touched = self._batch_penalty(x)
                objective = objective + touched * weight if touched is not None else objective
            objective.backward()
            tally.add(loss, outputs, y, y.shape[0] / targets.shape[0])
        tally.epoch_count += targets.shape[0]

    def _apply_step(self, global_size: int) -> None:
        """Clip (or measure) the gradient, step the optimizer and the schedule, count, log."""
        state, tally = self.state, self.tally
        self._timed_samples += global_size
        self.last_batch_size = global_size // self.strategy.world
        logging_now = (state.step + 1) % self.config.log_every == 0
        grad_norm = None
        if self.config.grad_clip is not None:
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        elif logging_now:
            grad_norm = self.strategy.grad_norm(self.model)
        self.last_lr = lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        tally.interval_steps += 1
        state.step, state.batch, state.samples = (
            state.step + 1,
            state.batch + 1,
            state.samples + global_size,
        )
        if logging_now:
            self._log_step(lr, grad_norm)

    def _log_step(self, lr: float, grad_norm: torch.Tensor | None) -> None:
        self._check_finite()
        loss = self.strategy.global_mean(self.tally.interval_loss, self.tally.interval_steps)
        record = {"kind": "step", "epoch": self.state.epoch + 1, "step": self.state.step}
        record.update(loss=loss, lr=lr)
        if grad_norm is not None:
            full = getattr(grad_norm, "full_tensor", None)  # a sharded model's norm
            record["grad_norm"] = float(full() if full is not None else grad_norm)
        self._log(record)
        self.tally.reset_interval()

    def _end_epoch(self) -> None:
        """Validate, write the epoch record, let callbacks react, advance, checkpoint."""
        state, tally, mean = self.state, self.tally, self.strategy.global_mean
        if state.batch == 0:
            return  # nothing trained in this epoch (max_steps fell on its boundary)
        self._check_finite()
        seconds = time.perf_counter() - self._epoch_started
        record: dict[str, Any] = {"kind": "epoch", "epoch": state.epoch + 1, "step": state.step}
        record["train_loss"] = mean(tally.epoch_loss, max(tally.epoch_count, 1))
        if tally.scores_accuracy:
            record["train_accuracy"] = mean(tally.epoch_correct, tally.epoch_scored.clamp_min(1))
        if self.val_loader is not None:  # in the training precision, as the test split is
            with self.precision.autocast():
                record.update(
                    evaluate(
                        self.model, self.val_loader, self.loss_fn, self.metrics, self.device, "val_"
                    )
                )
        # the rate of the epoch's last step: the schedule has moved on, past its end after the
        # last step (a linear one-cycle then gives a negative rate that no step uses)
        record["lr"] = self.last_lr
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
        tally.reset_epoch()
        if self.checkpoints:
            self.save_checkpoint()

    def _interrupt(self, signum: int) -> None:
        where = f"step {self.state.step} (epoch {self.state.epoch + 1}, batch {self.state.batch})"
        name = signal.Signals(signum).name
        if self.checkpoints:
            folder = self.save_checkpoint()
            raise TrainingInterrupted(f"{name}: stopped at {where}; checkpoint {folder}")
        raise TrainingInterrupted(f"{name}: stopped at {where}; no checkpoint (no run folder)")

    # --- small helpers ------------------------------------------------------------------------

    def steps_in_epoch(self, epoch: int) -> int:
        """Optimizer steps in `epoch` (the last may be cut short by max_steps)."""
        return min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)

    def interval_loss(self) -> float:
        """Mean training loss since the last step record (synchronises with the device)."""
        return (self.tally.interval_loss / max(self.tally.interval_steps, 1)).item()

    def epoch_loss(self) -> float:
        """Mean training loss of the current epoch so far (synchronises with the device)."""
        return (self.tally.epoch_loss / max(self.tally.epoch_count, 1)).item()

    def _tick(self) -> float:
        """Add the wall time since the last tick to state.elapsed_s and return the total."""
        now = time.perf_counter()
        self.state.elapsed_s += now - self._clock
        self._clock = now
        return self.state.elapsed_s

    def _check_finite(self) -> None:
        # every rank of a job raises together, none waits on a collective
        if self.strategy.any(self.tally.check()):
            last = self.checkpoints.latest() if self.checkpoints else None
            kept = (
                f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
            )
            raise TrainingDiverged(
                f"the training loss became NaN or infinite by step {self.state.step} "
                f"(epoch {self.state.epoch + 1}); {kept}; try a smaller train.optimizer.lr "
                f"(now {self.config.optimizer.lr:g}) or set train.grad_clip"
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
            "optimizer": self.strategy.optimizer_state(self.model, self.optimizer),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "rng": rng_state(),
            "sums": self.tally.state_dict(),
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
        self.strategy.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        if self.scheduler is not None:  # a constant rate has none (older checkpoints saved one)
            self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.tally.load_state_dict(state["sums"])
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
        weights = self.strategy.full_weights(self.model)
        state = self.state_dict()
        if not self.main:
            return None
        return self.checkpoints.save(weights, state, self.recipe_yaml)

    def resume(self, folder: Path) -> None:
        """Continue from the checkpoint in `folder`; later metrics.jsonl lines are dropped."""
        self.load_state_dict(self.strategy.load_checkpoint(self.model, folder))
        if self.state.stop_reason == "completed" and self.state.step < self.total_steps:
            self.state.stop_reason = None  # the run was given more epochs or steps
        self.strategy.reseed(self.seed, self.state.step)  # the RNG saved is rank 0's
        if self.out_dir is not None and self.main:
            log = self.out_dir / "metrics.jsonl"
            if log.exists():
                lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
                atomic_write_text(log, "".join(lines[: self.state.log_lines]))  # kill-safe
