"""Losses, weight-decay groups and learning-rate schedules, each against a formula written out."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dlab.recipe import from_dict
from dlab.registry import LOSSES, OPTIMIZERS
from dlab.training.optim import build_scheduler

pytestmark = pytest.mark.unit


def _train_section(**train):
    return from_dict(
        {"data": {"name": "mnist_sample"}, "model": {"name": "mlp"}, "train": train}
    ).train


def test_label_smoothing_mixes_a_uniform_distribution_into_the_targets():
    torch.manual_seed(0)
    logits, targets = 3 * torch.randn(6, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 4, 0])
    loss = LOSSES.build(_train_section(loss={"name": "cross_entropy", "label_smoothing": 0.2}).loss)
    log_p = logits.log_softmax(-1)
    smoothed = torch.full_like(log_p, 0.2 / 5)
    smoothed[torch.arange(6), targets] += 0.8  # (1 − ε)·one-hot + ε/K
    expected = -(smoothed * log_p).sum(-1).mean()
    torch.testing.assert_close(loss(logits, targets), expected)
    plain = LOSSES.build(_train_section().loss)(logits, targets)
    assert abs(float(plain - expected)) > 0.01  # the case tells smoothing from none


def test_the_mae_loss_is_the_mean_absolute_error():
    predicted = torch.tensor([[1.0], [2.0], [5.0]])
    truth = torch.tensor([[0.0], [4.0], [5.5]])
    mae = LOSSES.build(_train_section(loss="mae").loss)
    assert float(mae(predicted, truth)) == pytest.approx((1 + 2 + 0.5) / 3)
    mse = LOSSES.build(_train_section(loss="mse").loss)
    assert float(mse(predicted, truth)) == pytest.approx((1 + 4 + 0.25) / 3)


@pytest.mark.parametrize("name", ["sgd", "adamw", "rmsprop"])
def test_weight_decay_shrinks_weights_but_not_biases_or_norms(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    optimizer = OPTIMIZERS.build(
        _train_section(optimizer={"name": name, "lr": 0.1, "weight_decay": 0.5}).optimizer, model
    )
    decayed = [p for p in model.parameters() if p.ndim >= 2]
    groups = {g["weight_decay"]: g["params"] for g in optimizer.param_groups}
    assert set(groups) == {0.5, 0.0}
    assert {id(p) for p in groups[0.5]} == {id(p) for p in decayed}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no gradient: only the decay moves anything
    optimizer.step()
    for n, p in model.named_parameters():
        if p.ndim >= 2:
            assert not torch.equal(p, before[n]), n
            if name != "rmsprop":  # decoupled (AdamW) or plain (SGD) decay: p ← (1 − lr·λ)·p
                torch.testing.assert_close(p.detach(), before[n] * (1 - 0.1 * 0.5))
        else:
            assert torch.equal(p, before[n]), n  # biases and the norm's scale stay


def test_no_weight_decay_is_one_group():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    optimizer = OPTIMIZERS.build(_train_section(optimizer={"name": "sgd"}).optimizer, model)
    assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["weight_decay"] == 0.0


def _rates(scheduler_section, total_steps: int, steps_per_epoch: int, warmup: int = 0):
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    section = _train_section(scheduler=scheduler_section).scheduler
    scheduler = build_scheduler(section, optimizer, total_steps, steps_per_epoch, warmup)
    rates = []
    for _ in range(total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_the_step_schedule_multiplies_by_gamma_every_few_epochs():
    rates = _rates(
        {"name": "step", "every_epochs": 2, "gamma": 0.5}, total_steps=50, steps_per_epoch=10
    )
    expected = [0.1 * 0.5 ** (step // 20) for step in range(50)]  # epochs 1-2, 3-4, 5
    assert rates == pytest.approx(expected, rel=1e-12)


def test_the_linear_schedule_falls_to_end_factor_times_the_peak():
    rates = _rates({"name": "linear", "end_factor": 0.1}, total_steps=40, steps_per_epoch=10)
    expected = [0.1 * (1 - 0.9 * step / 40) for step in range(40)]
    assert rates == pytest.approx(expected, rel=1e-9)
    to_zero = _rates({"name": "linear"}, total_steps=10, steps_per_epoch=10)
    assert to_zero[0] == 0.1 and to_zero[-1] == pytest.approx(0.01)  # 1/10 of the way left


def test_constant_stays_put_after_its_warm_up():
    rates = _rates("constant", total_steps=12, steps_per_epoch=4, warmup=4)
    # linear warm-up from peak / 4, reaching the peak after four steps
    assert rates[:4] == pytest.approx([0.1 * (0.25 + 0.75 * k / 4) for k in range(4)])
    assert rates[4:] == pytest.approx([0.1] * 8)


def test_cosine_follows_its_formula_to_min_factor():
    rates = _rates({"name": "cosine", "min_factor": 0.1}, total_steps=20, steps_per_epoch=5)
    floor = 0.01
    expected = [floor + (0.1 - floor) * (1 + math.cos(math.pi * s / 20)) / 2 for s in range(20)]
    assert rates == pytest.approx(expected, rel=1e-9)


def test_norm_lr_scale_gives_normalisation_parameters_their_own_rate_and_decay():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    section = {"name": "sgd", "lr": 0.1, "weight_decay": 0.5, "norm_lr_scale": 64}
    optimizer = OPTIMIZERS.build(_train_section(optimizer=section).optimizer, model)
    norm = {id(model[1].weight), id(model[1].bias)}
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.1, 0.1 * 64]
    assert {id(p) for p in optimizer.param_groups[-1]["params"]} == norm
    assert optimizer.param_groups[-1]["weight_decay"] == 0.0  # norms are not decayed by default
    assert optimizer.param_groups[0]["weight_decay"] == 0.5  # the weights' group stays first
    decayed = {"norm_decay": True, **section}
    optimizer = OPTIMIZERS.build(_train_section(optimizer=decayed).optimizer, model)
    group = optimizer.param_groups[-1]
    # the same shrink per step as the weights: lr·λ = (64 lr)·(λ / 64)
    assert group["lr"] * group["weight_decay"] == pytest.approx(0.1 * 0.5)
    plain = OPTIMIZERS.build(_train_section(optimizer={"name": "sgd"}).optimizer, model)
    assert len(plain.param_groups) == 1  # without the switch nothing changes


def test_onecycle_keeps_each_groups_own_peak_and_can_anneal_linearly_like_airbench():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    section = {"name": "sgd", "lr": 0.5, "momentum": 0.85, "nesterov": True, "norm_lr_scale": 8}
    optimizer = OPTIMIZERS.build(_train_section(optimizer=section).optimizer, model)
    schedule = {
        "name": "onecycle",
        **{"pct_start": 0.23, "div_factor": 5, "final_div_factor": 0.2 / 0.07},
        **{"anneal": "linear", "cycle_momentum": False},
    }
    total = 100
    scheduler = build_scheduler(
        _train_section(scheduler=schedule).scheduler, optimizer, total, 10, 0
    )
    warm = 0.23 * total - 1  # torch's rise ends on step pct_start·total − 1

    def airbench(step):  # airbench94's get_lr, with its rise ending where torch's does
        if step < warm:
            return 0.2 + 0.8 * step / warm
        return 1.0 - 0.93 * (step - warm) / (total - 1 - warm)

    for step in range(total):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * airbench(step), rel=1e-9)
        assert optimizer.param_groups[1]["lr"] == pytest.approx(8 * 0.5 * airbench(step))
        assert optimizer.param_groups[0]["momentum"] == 0.85  # not cycled
        optimizer.step()
        scheduler.step()
