"""DP-SGD through Opacus: the budget is spent and not exceeded, batches are Poisson draws that a
resumed run repeats, and models or settings Opacus cannot handle are refused clearly."""

from __future__ import annotations

import numpy as np

# the Makefile installs the privacy extra: a missing or broken opacus fails here, never skips
import opacus  # noqa: F401
import pytest
import torch
from conftest import make_blobs
from torch import nn

from dlab.data.arrays import as_bundle
from dlab.data.bundle import TensorLoader
from dlab.errors import RecipeError
from dlab.recipe import TrainConfig
from dlab.training.callbacks import Callback
from dlab.training.privacy import PoissonLoader
from dlab.training.trainer import Trainer

PRIVACY = {"epsilon": 3.0, "delta": 1e-4, "max_grad_norm": 1.0}


def mlp(seed=0, norm=False):
    torch.manual_seed(seed)
    middle = [nn.BatchNorm1d(32)] if norm else []
    return nn.Sequential(nn.Linear(8, 32), *middle, nn.ReLU(), nn.Linear(32, 3))


def bundle():
    x, y = make_blobs(2000, seed=0)
    return as_bundle((x, y), (x[:300], y[:300]), batch_size=100, seed=0, loss="cross_entropy")


def trainer(out_dir=None, model=None, callbacks=(), **fields):
    config = TrainConfig.model_validate(
        {
            "epochs": 4,
            "optimizer": {"name": "sgd", "lr": 0.5},
            "privacy": PRIVACY,
            "checkpoint_every": 15,
            **fields,
        }
    )
    return Trainer(
        model or mlp(), bundle(), config, out_dir=out_dir, progress=False, callbacks=callbacks
    )


def test_dp_sgd_spends_its_budget_and_still_learns():
    run = trainer()
    history = run.fit()
    spent = history["epsilon"]
    assert spent == sorted(spent)  # privacy loss only grows
    # the noise is calibrated to the whole run: it ends just under the budget, not far below
    assert 0.9 * PRIVACY["epsilon"] < spent[-1] <= PRIVACY["epsilon"]
    assert run.privacy.noise_multiplier > 0.5
    assert history["val_accuracy"][-1] > 0.9  # blobs are easy even through clipping and noise


def test_a_smaller_budget_adds_more_noise():
    loose = trainer(privacy={**PRIVACY, "epsilon": 8.0}).privacy.noise_multiplier
    tight = trainer(privacy={**PRIVACY, "epsilon": 1.0}).privacy.noise_multiplier
    assert tight > 2 * loose


def test_poisson_batches_vary_in_size_and_repeat_for_the_same_epoch():
    x = torch.arange(1000.0)[:, None]
    loader = PoissonLoader(TensorLoader(x, torch.zeros(1000), batch_size=50, shuffle=True))
    sizes = [len(b[1]) for b in loader.epoch(0)]
    assert len(sizes) == 20 and len(set(sizes)) > 5
    assert np.mean(sizes) == pytest.approx(50, rel=0.15)
    again = [b[0] for b in loader.epoch(0, start=5)]
    first = [b[0] for b in loader.epoch(0)][5:]
    assert all(torch.equal(a, b) for a, b in zip(again, first, strict=True))
    assert not torch.equal(next(loader.epoch(1))[0], next(loader.epoch(0))[0])


def test_a_private_run_resumes_with_its_spent_budget(tmp_path):
    straight = trainer(tmp_path / "a")
    straight.fit()

    class Crash(Callback):
        def on_step_end(self, t):
            if t.state.step == 50:
                raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError):
        trainer(tmp_path / "b", callbacks=[Crash()]).fit()
    resumed = trainer(tmp_path / "b")
    resumed.resume(resumed.checkpoints.latest())
    resumed.fit()
    assert resumed.privacy.epsilon() == pytest.approx(straight.privacy.epsilon(), rel=1e-12)
    for name, weight in straight.model.state_dict().items():  # noise and batches replayed
        torch.testing.assert_close(resumed.model.state_dict()[name], weight, rtol=0, atol=0)


def test_batch_norm_is_refused_with_the_field_to_change():
    with pytest.raises(RecipeError, match="train.privacy: Opacus cannot.*model.batch_norm=false"):
        trainer(model=mlp(norm=True))


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"grad_clip": 1.0}, "train.grad_clip"), ({"l2": 1e-4}, "train.l2")],
)
def test_settings_that_clash_with_dp_sgd_are_refused(fields, field):
    with pytest.raises(RecipeError, match=field):
        trainer(**fields)


@pytest.mark.slow  # a real training run of 10-20 s: not a unit test
def test_a_private_run_reports_what_it_spent(tmp_path):
    import html

    import dlab

    recipe = {
        "name": "private",
        "data": {"name": "mnist_sample", "batch_size": 64, "val_size": 500},
        "model": {"name": "mlp", "hidden": [32]},
        "train": {"epochs": 2, "optimizer": {"name": "sgd", "lr": 0.2}, "privacy": PRIVACY},
    }
    run = dlab.train(recipe, runs_dir=tmp_path, progress=False)
    spent = run.dir.meta["privacy"]
    epochs = [r["epsilon"] for r in run.history.records]
    assert spent["epsilon_spent"] == pytest.approx(epochs[-1]) and epochs == sorted(epochs)
    page = html.unescape((run.path / "report.html").read_text())
    section = page.split('id="privacy"', 1)[1].split("</section>", 1)[0]
    assert (
        f"per-sample gradients clipped to 1, Gaussian noise ×{spent['noise_multiplier']:.3f}"
        in section
    )
    assert (
        f"Spent ε = {spent['epsilon_spent']:.3f} of a budget of 3 at δ = 0.0001 "
        "(Opacus RDP accountant)" in section
    )
    assert "privacy spent per epoch" in section and "<img" in section
