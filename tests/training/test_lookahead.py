"""Lookahead on the weights: the slow copy against its formula, stepped by hand, and in a run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dlab.recipe import Lookahead as LookaheadConfig
from dlab.training.lookahead import Lookahead

pytestmark = pytest.mark.unit


def test_the_slow_weights_follow_the_formula_and_the_run_ends_on_them():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    model(torch.randn(8, 2))  # running statistics to average as well
    trainer = SimpleNamespace(model=model, state=SimpleNamespace(step=0), total_steps=12)
    config = LookaheadConfig(every=3, decay=0.8, power=2.0)
    callback = Lookahead(config)
    callback.on_fit_start(trainer)
    assert "1.running_mean" in callback.slow and "1.num_batches_tracked" not in callback.slow
    slow = {k: v.clone() for k, v in callback.slow.items()}
    for step in range(1, 13):
        with torch.no_grad():  # an "optimizer step": every float entry moves
            for value in model.state_dict().values():
                if value.is_floating_point():
                    value.add_(torch.randn_like(value))
        fast = {k: v.clone() for k, v in model.state_dict().items() if k in slow}
        trainer.state.step = step
        callback.on_step_end(trainer)
        if step == 12:  # the last step: the weights become the slow copy, which stays
            expected = slow
        elif step % 3 == 0:
            d = 0.8 * (step / 12) ** 2
            expected = {k: slow[k] + (1 - d) * (fast[k] - slow[k]) for k in slow}
        else:
            expected = fast
        for key, value in model.state_dict().items():
            if key in slow:
                torch.testing.assert_close(value, expected[key]), key
        if step % 3 == 0:
            slow = {k: v.clone() for k, v in expected.items()}


def test_the_slow_weights_survive_a_checkpoint():
    model = nn.Linear(2, 2)
    trainer = SimpleNamespace(model=model, state=SimpleNamespace(step=0), total_steps=10)
    saved = Lookahead(LookaheadConfig())
    saved.on_fit_start(trainer)
    restored = Lookahead(LookaheadConfig())
    restored.load_state_dict(saved.state_dict())
    with torch.no_grad():
        model.weight.add_(1.0)
    restored.on_fit_start(trainer)  # a resumed run keeps the slow copy it brought
    torch.testing.assert_close(restored.slow["weight"], saved.slow["weight"])
    assert not torch.equal(restored.slow["weight"], model.weight)
