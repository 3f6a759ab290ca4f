"""Large-model switches (gradient accumulation, activation checkpointing, torch.compile) compute
the same steps as the plain path, within the tolerance each test states."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_blobs
from numerics import assert_within_measured_drift, nudge_by_one_rounding
from torch import nn

from dlab.data.arrays import as_bundle
from dlab.errors import DlabError, RecipeError
from dlab.models import build
from dlab.models.examples import example_batch, example_meta
from dlab.recipe import TrainConfig
from dlab.registry import MODELS
from dlab.training.metrics import forward
from dlab.training.switches import checkpoint_activations
from dlab.training.trainer import Trainer

# each test compares two arithmetic paths: `make test` runs them again on other CPU kernels
pytestmark = pytest.mark.numerics

CURVES = ("train_loss", "val_loss")


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3))


def blobs(n=250, batch_size=50):
    x, y = make_blobs(n, seed=0)
    return as_bundle((x, y), (x[:60], y[:60]), batch_size=batch_size, seed=0, loss="cross_entropy")


def fit(model, bundle, **fields):
    config = TrainConfig.model_validate(
        {"epochs": 3, "log_every": 1, "optimizer": {"name": "sgd", "lr": 0.1}, **fields}
    )
    trainer = Trainer(model, bundle, config, progress=False)
    return trainer, trainer.fit()


def test_gradient_accumulation_takes_the_same_steps_as_the_whole_batch():
    # 250 samples in batches of 50, each cut into 4 micro-batches of 13/13/12/12: unequal sizes
    # weigh by their share, so the step is the whole batch's to float32 summation order (equal
    # weights of 1/4 move the first epoch's loss by 7e-4, hundreds of times the floor)
    _, plain = fit(mlp(), blobs())
    _, baseline = fit(nudge_by_one_rounding(mlp()), blobs())
    model, seen = mlp(), []
    model.register_forward_pre_hook(
        lambda module, args: seen.append(len(args[0])) if module.training else None
    )
    accumulated, history = fit(model, blobs(), grad_accumulation=4)
    assert_within_measured_drift(history, plain, baseline, CURVES, floor=1e-6)
    assert accumulated.state.step == 15  # optimizer steps count batches, not micro-batches
    assert seen == [13, 13, 12, 12] * 15  # the batches really were cut: the same sum, in parts


def test_grad_clip_bounds_the_norm_of_the_step_taken():
    """Plain SGD (lr 1) moves the weights by exactly the gradient: clipped, by at most `grad_clip`."""

    def first_step(**fields):
        model = mlp()
        before = torch.cat([p.detach().clone().ravel() for p in model.parameters()])
        fit(model, blobs(), epochs=1, max_steps=1, optimizer={"name": "sgd", "lr": 1.0}, **fields)
        after = torch.cat([p.detach().ravel() for p in model.parameters()])
        return torch.linalg.vector_norm(after - before).item()

    free = first_step()
    assert free > 0.1  # the bound below is far under the unclipped step
    assert first_step(grad_clip=0.01) == pytest.approx(0.01, rel=1e-3)


def test_bf16_runs_the_forward_matmuls_in_bfloat16():
    dtypes: list[torch.dtype] = []
    model = mlp()
    model[0].register_forward_hook(
        lambda module, args, out: dtypes.append(out.dtype) if module.training else None
    )
    fit(model, blobs(), epochs=1, max_steps=2, precision="bf16")
    assert dtypes == [torch.bfloat16] * 2
    assert model[0].weight.dtype == torch.float32  # the weights stay in float32
    dtypes.clear()
    fit(model, blobs(), epochs=1, max_steps=2)
    assert dtypes == [torch.float32] * 2


def test_bf16_validates_in_bfloat16_too():
    seen: list[tuple[bool, torch.dtype]] = []
    model = mlp()
    model[0].register_forward_hook(
        lambda module, args, out: seen.append((module.training, out.dtype))
    )
    fit(model, blobs(), epochs=1, precision="bf16")
    first_step = [training for training, _ in seen].index(True)  # after setup's FLOP count
    validation = [dtype for training, dtype in seen[first_step:] if not training]
    assert validation and set(validation) == {torch.bfloat16}
    seen.clear()
    fit(model, blobs(), epochs=1)
    assert {dtype for _, dtype in seen} == {torch.float32}


def test_gradient_accumulation_needs_a_sample_in_every_micro_batch():
    with pytest.raises(DlabError, match="need at least 4 samples in every batch.*last batch of 2"):
        fit(mlp(), blobs(n=202), grad_accumulation=4)


def model_and_batch(name, seed=0):
    torch.manual_seed(seed)
    meta = example_meta(name)
    model = build(MODELS.get(name).config(name=name, dropout=0.2), meta)
    return model, example_batch(meta)


def gradients(model, batch):
    torch.manual_seed(1)  # the same dropout masks for both models
    outputs = forward(model, batch[0])
    loss = F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), batch[1].reshape(-1))
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["gpt", "transformer_classifier", "seq2seq_transformer"])
def test_activation_checkpointing_recomputes_the_same_gradients(name):
    plain, batch = model_and_batch(name)
    recomputed, _ = model_and_batch(name)
    assert checkpoint_activations(recomputed) >= 2
    assert recomputed.state_dict().keys() == plain.state_dict().keys()
    expected, got = gradients(plain, batch), gradients(recomputed, batch)
    assert got.keys() == expected.keys()
    for key in expected:  # dropout included: checkpointing replays the RNG, so exact
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)


def test_activation_checkpointing_refuses_a_model_without_blocks():
    with pytest.raises(RecipeError, match="train.activation_checkpointing: Sequential has no"):
        fit(mlp(), blobs(), activation_checkpointing=True)


@pytest.mark.slow
def test_torch_compile_trains_like_eager():
    _, plain = fit(mlp(), blobs())
    _, baseline = fit(nudge_by_one_rounding(mlp()), blobs())
    from torch._dynamo.utils import counters

    counters.clear()
    compiled, history = fit(mlp(), blobs(), compile=True)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo really captured and compiled a graph
    assert "_orig_mod" not in "".join(compiled.model.state_dict())  # checkpoints keep their keys
    # inductor fuses and reorders float32 arithmetic: agreement to about 1e-5 relative
    assert_within_measured_drift(history, plain, baseline, CURVES, floor=1e-4)
