"""The training loop: it learns, resumes exactly, stops cleanly, and refuses to hide a NaN."""

from __future__ import annotations

import itertools
import json
import os
import signal

import numpy as np
import pytest
import torch
from conftest import make_blobs
from numerics import assert_within_measured_drift, nudge_by_one_rounding
from torch import nn

import dlab
from dlab import run_steps, runtime
from dlab.data.arrays import as_bundle
from dlab.errors import RecipeError, TrainingDiverged, TrainingInterrupted
from dlab.recipe import TrainConfig
from dlab.training.callbacks import Callback
from dlab.training.checkpoint import CheckpointStore
from dlab.training.losses import weight_penalty
from dlab.training.trainer import Trainer

TIMING = {"time_s", "samples_per_s", "elapsed_s"}


def blobs_bundle(n=240, seed=0, val=True):
    x, y = make_blobs(n, seed=seed)
    vx, vy = make_blobs(120, seed=seed)  # same centres (same seed), fresh noise is not needed here
    return as_bundle(
        (x, y), (vx, vy) if val else None, batch_size=16, seed=seed, loss="cross_entropy"
    )


def mlp(dropout=0.3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 3))


def config(**fields) -> TrainConfig:
    return TrainConfig.model_validate(
        {"epochs": 3, "log_every": 5, "checkpoint_every": 7, **fields}
    )


def records(out_dir):
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


class CrashAt(Callback):
    """Simulates a crash (like SIGKILL) right after step `step`."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer):
        if trainer.state.step == self.step:
            raise RuntimeError("simulated crash")


def test_fit_learns_a_separable_problem():
    x, y = make_blobs(400)
    history = dlab.fit(
        mlp(0.0),
        (x, y),
        val_data=make_blobs(200, seed=0),
        epochs=5,
        batch_size=32,
        lr=0.01,
        progress=False,
    )
    assert len(history) == 5
    assert history["val_accuracy"][-1] > 0.95
    assert history["train_loss"][-1] < history["train_loss"][0]


RESUME_CASES = {
    "adam+constant": {},
    "sgd-nesterov+onecycle": {
        "optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": True, "lr": 0.05},
        "scheduler": "onecycle",
    },
    "adamw+warmup+cosine": {"optimizer": "adamw", "scheduler": "cosine", "warmup_steps": 10},
    "rmsprop+step+clip": {
        "optimizer": {"name": "rmsprop", "lr": 0.003},
        "scheduler": {"name": "step", "every_epochs": 1},
        "grad_clip": 0.5,
    },
    "adam+l1+l2+smoothing": {
        "l1": 1e-4,
        "l2": 1e-3,
        "loss": {"name": "cross_entropy", "label_smoothing": 0.1},
    },
    "sgd+lookahead+linear-onecycle": {
        "optimizer": {"name": "sgd", "momentum": 0.85, "nesterov": True, "lr": 0.05},
        "scheduler": {"name": "onecycle", "anneal": "linear", "cycle_momentum": False},
        "lookahead": {"every": 3},  # not a divisor of the checkpoint step (28)
    },
    "linear+early-stopping": {
        "scheduler": "linear",
        "early_stopping": {"monitor": "val_loss", "patience": 5},
    },
}


@pytest.mark.parametrize("fields", RESUME_CASES.values(), ids=RESUME_CASES.keys())
def test_a_crashed_run_resumes_bitwise_identically(tmp_path, fields):
    straight = Trainer(
        mlp(), blobs_bundle(), config(**fields), seed=5, out_dir=tmp_path / "a", progress=False
    )
    straight.fit()

    crashed = Trainer(
        mlp(),
        blobs_bundle(),
        config(**fields),
        seed=5,
        out_dir=tmp_path / "b",
        progress=False,
        callbacks=[CrashAt(29)],
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit()
    latest = CheckpointStore(tmp_path / "b" / "checkpoints").latest()
    assert latest.name.endswith("step28")  # mid-epoch 2 (15 steps per epoch), crash at 29

    resumed = Trainer(
        mlp(seed=99),
        blobs_bundle(),
        config(**fields),
        seed=5,
        out_dir=tmp_path / "b",
        progress=False,
    )
    resumed.resume(latest)
    resumed.fit()

    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert records(tmp_path / "a") == records(tmp_path / "b")
    assert resumed.state.step == straight.state.step == 45
    assert [r["val_loss"] for r in resumed.history.records] == [
        r["val_loss"] for r in straight.history.records
    ]


def test_sigint_saves_a_checkpoint_and_resumes(tmp_path):
    class Interrupt(Callback):
        def on_step_end(self, trainer):
            if trainer.state.step == 20:
                os.kill(os.getpid(), signal.SIGINT)

    straight = Trainer(mlp(), blobs_bundle(), config(), out_dir=tmp_path / "a", progress=False)
    straight.fit()
    # what the process had before (a job started in the background with `&` ignores SIGINT)
    before = signal.getsignal(signal.SIGINT)
    stopped = Trainer(
        mlp(),
        blobs_bundle(),
        config(),
        out_dir=tmp_path / "b",
        progress=False,
        callbacks=[Interrupt()],
    )
    with pytest.raises(
        TrainingInterrupted, match=r"SIGINT: stopped at step 20 \(epoch 2, batch 5\)"
    ):
        stopped.fit()
    latest = CheckpointStore(tmp_path / "b" / "checkpoints").latest()
    assert latest.name.endswith("step20")
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    resumed = Trainer(mlp(), blobs_bundle(), config(), out_dir=tmp_path / "b", progress=False)
    resumed.resume(latest)
    resumed.fit()
    assert all(
        torch.equal(v, resumed.model.state_dict()[k])
        for k, v in straight.model.state_dict().items()
    )


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    x, y = make_blobs(240)
    x[200] = np.nan
    bundle = as_bundle((x, y), None, batch_size=16, seed=0, loss="cross_entropy")
    trainer = Trainer(
        mlp(0.0), bundle, config(log_every=1, checkpoint_every=1), out_dir=tmp_path, progress=False
    )
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit()
    message = str(info.value)
    assert "became NaN or infinite by step" in message and "the last good checkpoint is" in message
    assert "train.optimizer.lr" in message
    latest = CheckpointStore(tmp_path / "checkpoints").latest()
    model = mlp(0.0)
    CheckpointStore.load(latest, model)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert int(latest.name.rsplit("step", 1)[1]) < trainer.state.step


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path):
    x, y = make_blobs(240)
    noise = np.random.default_rng(1).normal(size=(120, 8)).astype(np.float32)
    bundle = as_bundle(
        (x, y), (noise, np.zeros(120, dtype=np.int64)), batch_size=16, seed=0, loss="cross_entropy"
    )
    es = {"monitor": "val_loss", "patience": 2}
    trainer = Trainer(
        mlp(0.0),
        bundle,
        config(epochs=30, early_stopping=es, optimizer={"name": "adam", "lr": 0.05}),
        out_dir=tmp_path,
        progress=False,
    )
    history = trainer.fit()
    assert trainer.state.stop_reason.startswith(
        "early stopping: val_loss did not improve for 2 epochs"
    )
    assert len(history) < 30
    best = min(history["val_loss"])
    assert history.records[trainer.early_stopping.best_epoch - 1]["val_loss"] == best
    from dlab.training.metrics import evaluate

    again = evaluate(trainer.model, bundle.val, trainer.loss_fn, trainer.metrics, trainer.device)
    assert again["loss"] == pytest.approx(best, rel=1e-6)


def test_unknown_early_stopping_metric_is_a_recipe_error():
    trainer = Trainer(
        mlp(), blobs_bundle(), config(early_stopping={"monitor": "val_acc"}), progress=False
    )
    with pytest.raises(
        RecipeError, match="'val_acc' is not a logged metric \\(did you mean 'val_accuracy'\\?\\)"
    ):
        trainer.fit()


def test_max_steps_ends_inside_an_epoch(tmp_path):
    trainer = Trainer(
        mlp(), blobs_bundle(), config(epochs=5, max_steps=20), out_dir=tmp_path, progress=False
    )
    history = trainer.fit()
    assert trainer.state.step == 20
    assert [r["step"] for r in history.records] == [15, 20]
    assert trainer.state.stop_reason == "completed"
    assert (trainer.state.epoch, trainer.state.batch) == (1, 5)  # inside epoch 2, not past it


def test_a_run_extended_past_max_steps_continues_inside_its_epoch(tmp_path):
    def run(max_steps, out_dir, resume=None):
        trainer = Trainer(
            mlp(dropout=0.0),
            blobs_bundle(),
            config(epochs=5, max_steps=max_steps),
            out_dir=out_dir,
            progress=False,
        )
        if resume is not None:
            trainer.resume(trainer.checkpoints.latest())
        trainer.fit()
        return trainer

    straight = run(40, tmp_path / "straight")
    run(20, tmp_path / "cut")
    extended = run(40, tmp_path / "cut", resume=True)
    assert extended.state.step == 40
    for name, weight in straight.model.state_dict().items():  # the same 40 batches, in order
        torch.testing.assert_close(extended.model.state_dict()[name], weight, msg=name)


def test_warmup_then_cosine_schedule():
    trainer = Trainer(
        mlp(),
        blobs_bundle(),
        config(epochs=2, warmup_steps=10, scheduler="cosine", optimizer={"name": "sgd", "lr": 0.1}),
        progress=False,
    )
    rates = [trainer.optimizer.param_groups[0]["lr"]]  # the rate of step 1

    class Record(Callback):
        def on_step_end(self, t):
            rates.append(t.optimizer.param_groups[0]["lr"])  # the rate of the next step

    trainer.callbacks.append(Record())
    trainer.fit()
    assert rates[0] == pytest.approx(0.01)  # peak / warmup_steps
    assert rates[5] == pytest.approx(0.1 * (0.1 + 0.9 * 5 / 10))  # linear in between
    assert rates[10] == pytest.approx(0.1)  # warm-up done after 10 steps
    assert rates[-1] == pytest.approx(0.0, abs=1e-9)  # cosine reaches zero at the last step
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))


@pytest.mark.parametrize("steps, pct_start", [(4, 0.25), (10, 0.1), (8, 0.125), (7, 0.3)])
def test_onecycle_schedules_short_runs(steps, pct_start):
    """torch's OneCycleLR divided by zero when the rise was exactly one step (4 steps at 0.25)."""
    trainer = Trainer(
        mlp(),
        blobs_bundle(),
        config(
            max_steps=steps,
            optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9},
            scheduler={"name": "onecycle", "pct_start": pct_start},
        ),
        progress=False,
    )
    rates = [trainer.optimizer.param_groups[0]["lr"]]

    class Record(Callback):
        def on_step_end(self, t):
            rates.append(t.optimizer.param_groups[0]["lr"])

    trainer.callbacks.append(Record())
    trainer.fit()
    assert trainer.state.step == steps
    rates = rates[:steps]  # the rate of each step (the last entry is for a step never taken)
    assert rates[0] == pytest.approx(0.1 / 25)  # peak / div_factor
    top = rates.index(max(rates))
    assert rates[top] > 0.5 * 0.1  # it rises towards the peak
    assert all(a >= b for a, b in itertools.pairwise(rates[top:]))  # then anneals
    assert rates[-1] < rates[0]  # below where it started


def test_penalty_gradients_are_l1_sign_plus_l2_weight():
    model = nn.Linear(4, 3)
    penalty = weight_penalty(model, l1=0.01, l2=0.1)
    penalty.backward()
    w = model.weight.detach()
    torch.testing.assert_close(model.weight.grad, 0.01 * w.sign() + 0.1 * w)
    assert model.bias.grad is None  # biases are not penalised
    assert weight_penalty(model, 0.0, 0.0) is None


def test_auto_threads_take_the_fastest_measured_count_and_change_nothing_else(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the policy itself, not the user's pin
    long = {"epochs": 34}  # 510 steps: a run long enough to be timed
    assert Trainer(mlp(), blobs_bundle(), config(), progress=False).thread_timings is None
    auto = Trainer(mlp(), blobs_bundle(), config(**long), seed=3, progress=False)
    timings = auto.thread_timings
    assert set(timings) == set(runtime.thread_choices())
    assert auto.threads == min(timings, key=timings.get) == torch.get_num_threads()
    meta = run_steps.thread_timings(auto)["pass_ms_by_threads"]  # as meta.json keeps them
    assert meta == {str(n): round(t * 1e3, 3) for n, t in timings.items()}
    measured = auto.fit()["train_loss"]
    fixed = Trainer(
        mlp(), blobs_bundle(), config(**long, threads=auto.threads), seed=3, progress=False
    )
    assert fixed.thread_timings is None  # a number asked for is not measured
    # the timing passes drew no dropout mask and moved no weight that training then sees
    assert measured == fixed.fit()["train_loss"]


def test_auto_threads_fall_back_to_the_step_size_and_respect_a_pin(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "time_threads", lambda *args, **kwargs: None)  # unmeasurable
    small = Trainer(mlp(), blobs_bundle(), config(epochs=34), progress=False)
    assert small.threads == 1 and small.forward_flops < 1e6
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr(runtime, "time_threads", lambda *args, **kwargs: pytest.fail("timed"))
    pinned = Trainer(mlp(), blobs_bundle(), config(epochs=34), progress=False)
    assert pinned.threads == 2 and pinned.thread_timings is None


def test_progress_prints_plain_lines_when_not_a_terminal(capsys):
    trainer = Trainer(mlp(), blobs_bundle(), config(epochs=2), progress=True)
    trainer.callbacks[0].plain_every_s = 0.0
    trainer.fit()
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "samples/s" in out and "eta" in out
    assert "epoch 2/2  train_loss" in out
    assert "\x1b[" not in out  # no terminal control codes in a log file


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        # no bias before batch norm (as in dlab's CNN): its true gradient is zero, so Adam would
        # steer it by the sign of rounding noise and the test would compare noise
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 7 * 7, 3),
    )


def image_bundle():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 192)
    x = rng.normal(size=(192, 1, 14, 14)).astype(np.float32)
    x[np.arange(192), 0, y * 4, y * 4] += 4.0  # each class lights its own pixel
    return as_bundle((x, y), (x[:64], y[:64]), batch_size=32, seed=0, loss="cross_entropy")


@pytest.mark.numerics
def test_channels_last_takes_the_same_first_step():
    sgd = config(epochs=1, max_steps=1, optimizer={"name": "sgd", "lr": 0.5})
    plain = Trainer(small_cnn(), image_bundle(), sgd, progress=False)
    nhwc = Trainer(
        small_cnn(), image_bundle(), sgd.model_copy(update={"channels_last": True}), progress=False
    )
    plain.fit(), nhwc.fit()
    assert nhwc.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert nhwc.state.step == 1
    start = small_cnn().state_dict()
    for name, expected in plain.model.state_dict().items():
        got = nhwc.model.state_dict()[name].contiguous()
        # one step apart from float32 summation order, and the step itself is not lost
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=name)
        assert name.endswith("num_batches_tracked") or not torch.equal(got, start[name]), name


@pytest.mark.numerics
def test_channels_last_trains_the_same_model():
    plain = Trainer(small_cnn(), image_bundle(), config(epochs=2), progress=False)
    nudged = Trainer(
        nudge_by_one_rounding(small_cnn()), image_bundle(), config(epochs=2), progress=False
    )
    nhwc = Trainer(
        small_cnn(), image_bundle(), config(epochs=2, channels_last=True), progress=False
    )
    reference, baseline, got = plain.fit(), nudged.fit(), nhwc.fit()
    # the same arithmetic in another memory order, so another kernel and summation order: it may
    # drift from the reference no further than a run one rounding apart does on this processor
    assert_within_measured_drift(got, reference, baseline, ["train_loss", "val_loss"])


@pytest.mark.numerics
def test_bf16_autocast_agrees_with_fp32_within_a_stated_tolerance():
    fast = {"epochs": 4, "optimizer": {"name": "adam", "lr": 0.01}}
    plain = Trainer(small_cnn(), image_bundle(), config(**fast), progress=False)
    bf16 = Trainer(small_cnn(), image_bundle(), config(**fast, precision="bf16"), progress=False)
    first, second = plain.fit(), bf16.fit()
    assert bf16.model[0].weight.dtype == torch.float32  # master weights stay fp32
    # bfloat16 keeps 8 bits of mantissa: curves agree to a few percent, and both learn
    np.testing.assert_allclose(second["train_loss"], first["train_loss"], rtol=0.05)
    assert second["val_accuracy"][-1] == pytest.approx(first["val_accuracy"][-1], abs=0.05)
    assert first["val_accuracy"][-1] > 0.9


def test_early_stopping_state_travels_in_checkpoints_old_and_new():
    stopping = {"early_stopping": {"monitor": "val_loss", "patience": 50}, "epochs": 3}
    trainer = Trainer(mlp(), blobs_bundle(), config(**stopping), progress=False)
    trainer.fit()
    kept = trainer.early_stopping.state_dict()
    assert kept["best_epoch"] is not None and kept["best"] == min(trainer.history["val_loss"])
    state = trainer.state_dict()
    assert state["callbacks"] == {"EarlyStopping": kept}  # callbacks without state save nothing

    fresh = Trainer(mlp(), blobs_bundle(), config(**stopping), progress=False)
    fresh.load_state_dict(state)
    assert fresh.early_stopping.state_dict() == kept

    # a checkpoint written before early stopping owned its state kept it among the trainer's
    old = {k: v for k, v in state.items() if k != "callbacks"}
    old["trainer"] = {**state["trainer"], **kept}
    older = Trainer(mlp(), blobs_bundle(), config(**stopping), progress=False)
    older.load_state_dict(old)
    assert older.early_stopping.state_dict() == kept


# --- what the loop records, checked against values measured beside it ---------------------------


class Beside(Callback):
    """Records what each optimizer step used: the model's outputs, the learning rate and the
    gradient norm (read in a step pre-hook, before the update)."""

    def __init__(self, trainer):
        self.outputs, self.lrs, self.norms = [], [], []
        self.interval, self.epoch_mean = {}, {}
        trainer.model.register_forward_hook(lambda m, i, out: self.outputs.append(out.detach()))

        def before_step(optimizer, args, kwargs):
            grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
            self.norms.append(
                float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
            )
            self.lrs.append(optimizer.param_groups[0]["lr"])

        trainer.optimizer.register_step_pre_hook(before_step)

    def on_step_end(self, trainer):
        self.interval[trainer.state.step] = trainer.interval_loss()
        self.epoch_mean[trainer.state.step] = trainer.epoch_loss()


def test_step_and_epoch_records_are_the_losses_lr_and_norms_the_loop_used(tmp_path):
    bundle = blobs_bundle(n=250, val=False)  # 16 batches an epoch, the last one of 10
    trainer = Trainer(
        mlp(dropout=0.0),
        bundle,
        config(epochs=2, scheduler={"name": "cosine"}),
        out_dir=tmp_path,
        progress=False,
    )
    beside = Beside(trainer)
    trainer.callbacks.append(beside)
    trainer.fit()
    batches = [b for epoch in range(2) for b in bundle.train.epoch(epoch)]
    outputs = beside.outputs  # one forward pass per step: no validation split here
    assert len(outputs) == len(batches) == 32
    losses = [
        float(nn.functional.cross_entropy(o, y)) for o, (_, y) in zip(outputs, batches, strict=True)
    ]
    sizes = [len(y) for _, y in batches]
    logged = records(tmp_path)
    steps = [r for r in logged if r["kind"] == "step"]
    assert [(r["epoch"], r["step"]) for r in steps] == [
        (1, 5), (1, 10), (1, 15), (2, 20), (2, 25), (2, 30)
    ]  # fmt: skip
    for r in steps:
        s = r["step"]
        assert r["loss"] == pytest.approx(np.mean(losses[s - 5 : s]), rel=1e-5)
        assert r["lr"] == pytest.approx(beside.lrs[s - 1], rel=1e-12)
        assert r["grad_norm"] == pytest.approx(beside.norms[s - 1], rel=1e-4)
    assert len({r["lr"] for r in steps}) == 6  # the cosine schedule moved between records
    epochs = [r for r in logged if r["kind"] == "epoch"]
    for r, first in zip(epochs, (0, 16), strict=True):
        part = slice(first, first + 16)
        expected = np.average(losses[part], weights=sizes[part])  # per sample, not per batch
        assert r["train_loss"] == pytest.approx(expected, rel=1e-5)
        assert abs(expected - np.mean(losses[part])) > 1e-4  # the uneven last batch tells
    for step, value in beside.interval.items():  # the mean since the last step record
        since = step - step % 5
        expected = np.mean(losses[since:step]) if step % 5 else 0.0  # a record was just written
        assert value == pytest.approx(expected, rel=1e-5), step
    for step, value in beside.epoch_mean.items():
        first = 0 if step <= 16 else 16
        part = slice(first, step)
        assert value == pytest.approx(np.average(losses[part], weights=sizes[part]), rel=1e-5)


def test_steps_in_each_epoch_follow_max_steps():
    trainer = Trainer(mlp(), blobs_bundle(n=250), config(epochs=3, max_steps=20), progress=False)
    assert trainer.steps_per_epoch == 16
    assert [trainer.steps_in_epoch(e) for e in range(2)] == [16, 4]


def test_a_second_sigint_aborts_but_a_second_sigterm_only_asks_again():
    from dlab.training.signals import GracefulStop

    stop = GracefulStop()
    stop._handle(signal.SIGTERM, None)
    stop._handle(signal.SIGTERM, None)  # asking twice is still asking
    assert stop.received == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):
        stop._handle(signal.SIGINT, None)
    first = GracefulStop()
    first._handle(signal.SIGINT, None)
    assert first.received == signal.SIGINT


def test_an_interrupted_trainer_without_a_run_folder_says_so():
    class Interrupt(Callback):
        def on_step_end(self, trainer):
            if trainer.state.step == 20:
                os.kill(os.getpid(), signal.SIGTERM)

    trainer = Trainer(mlp(), blobs_bundle(), config(), progress=False, callbacks=[Interrupt()])
    with pytest.raises(TrainingInterrupted) as info:
        trainer.fit()
    assert str(info.value) == (
        "SIGTERM: stopped at step 20 (epoch 2, batch 5); no checkpoint (no run folder)"
    )


def test_resuming_brings_back_threads_and_history_and_a_finished_run_stays_finished(tmp_path):
    torch_threads = torch.get_num_threads()
    try:
        first = Trainer(
            mlp(), blobs_bundle(), config(threads=1), out_dir=tmp_path / "a", progress=False
        )
        first.fit()
        latest = CheckpointStore(tmp_path / "a" / "checkpoints").latest()
        again = Trainer(mlp(), blobs_bundle(), config(threads=2), progress=False)  # no folder
        assert again.threads == 2
        again.resume(latest)
        assert again.threads == 1 and torch.get_num_threads() == 1
        assert again.history.records == first.history.records
        assert again.state.stop_reason == "completed"
        again.fit()  # nothing left to do: no step, no record
        assert again.state.step == first.state.step == 45
        assert again.history.records == first.history.records
    finally:
        torch.set_num_threads(torch_threads)


def test_resuming_a_run_cut_by_max_steps_adds_nothing_until_given_more(tmp_path):
    cut = Trainer(mlp(), blobs_bundle(), config(max_steps=20), out_dir=tmp_path, progress=False)
    cut.fit()
    logged = (tmp_path / "metrics.jsonl").read_text()
    latest = CheckpointStore(tmp_path / "checkpoints").latest()
    same = Trainer(mlp(), blobs_bundle(), config(max_steps=20), out_dir=tmp_path, progress=False)
    same.resume(latest)
    assert same.state.stop_reason == "completed"
    same.fit()
    assert same.state.step == 20 and (tmp_path / "metrics.jsonl").read_text() == logged


def test_tensorboard_writes_only_when_the_loggers_name_it(tmp_path):
    Trainer(mlp(), blobs_bundle(), config(epochs=1), out_dir=tmp_path / "a", progress=False).fit()
    events = list((tmp_path / "a" / "tb").iterdir())
    assert [p.name.startswith("events.out.tfevents") for p in events] == [True]
    quiet = config(epochs=1, loggers=[])  # metrics.jsonl only
    Trainer(mlp(), blobs_bundle(), quiet, out_dir=tmp_path / "b", progress=False).fit()
    assert not (tmp_path / "b" / "tb").exists()
    assert records(tmp_path / "b") == records(tmp_path / "a")  # the same training, logged alike
