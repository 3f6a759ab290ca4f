"""dlab.scratch against PyTorch: every check passes, a broken backward fails, and properties hold
over random shapes, strides, paddings, dilations, sequence lengths and masks (hypothesis)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlab.cli import main
from dlab.scratch import attention, checks, conv, layers, networks, recurrent
from dlab.scratch.checks import CHECKS, CheckResult, run_checks

SCRATCH = Path(attention.__file__).parent  # the NumPy formulas (their checks: scratch/checks/)


def test_scratch_never_imports_torch():
    for path in SCRATCH.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {
            a.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for a in node.names
        }
        imported |= {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert "torch" not in imported, path.name


@pytest.mark.parametrize("name", list(CHECKS))
def test_every_formula_agrees_with_pytorch(name):
    (result,) = run_checks([name])
    assert result.passed, (result.forward, result.gradient, result.finite_difference)


def test_a_wrong_backward_is_caught(monkeypatch):
    monkeypatch.setattr(layers, "relu_backward", lambda dy, x: dy)  # forgets the mask
    (result,) = run_checks(["relu"])
    assert not result.passed and result.gradient > 0.1 and result.finite_difference > 0.1


def test_dlab_check_cli(capsys):
    assert main(["check", "linear", "gru"]) == 0
    out = capsys.readouterr().out
    assert "all 2 formulas agree with PyTorch" in out
    assert main(["check", "--list"]) == 0 and "multi_head_attention" in capsys.readouterr().out
    assert main(["check", "lienar"]) == 2
    assert "did you mean 'linear'" in capsys.readouterr().err


def test_dlab_check_exits_1_on_failure(monkeypatch, capsys):
    monkeypatch.setattr(layers, "tanh_backward", lambda dy, y: dy * (1 - y))  # wrong derivative
    assert main(["check", "tanh"]) == 1
    assert "1 of 1 failed: tanh" in capsys.readouterr().out


def fresh(name: str) -> CheckResult:
    return CheckResult(name, CHECKS[name][0])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    size=st.tuples(st.integers(5, 9), st.integers(5, 9)),
    seed=st.integers(0, 10_000),
)
def test_conv2d_over_random_geometry(stride, padding, dilation, kernel, size, seed):
    if (
        conv.output_size(size[0], kernel[0], stride, padding, dilation) < 1
        or conv.output_size(size[1], kernel[1], stride, padding, dilation) < 1
    ):
        return
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    result = fresh("conv2d")
    x, w, b = rng.normal(size=(2, 2, *size)), rng.normal(size=(3, 2, *kernel)), rng.normal(size=3)
    checks.compare(
        result,
        lambda x, w, b: conv.conv2d_forward(x, w, b, stride, padding, dilation),
        conv.conv2d_backward,
        lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation),
        [x, w, b],
        [0, 1, 2],
        "random",
        finite_differences=False,
    )
    assert result.passed


@settings(max_examples=20, deadline=None)
@given(
    kernel=st.integers(1, 3),
    stride=st.integers(1, 3),
    seed=st.integers(0, 10_000),
    avg=st.booleans(),
)
def test_pooling_over_random_geometry(kernel, stride, seed, avg):
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    padding = kernel // 2
    x = rng.normal(size=(2, 2, 7, 6))
    result = fresh("avg_pool2d" if avg else "max_pool2d")
    if avg:
        checks.compare(
            result,
            lambda x: conv.avgpool2d_forward(x, kernel, stride, padding),
            lambda dy, c: [conv.avgpool2d_backward(dy, c)],
            lambda t: F.avg_pool2d(t, kernel, stride, padding),
            [x],
            [0],
            "random",
            finite_differences=False,
        )
    else:
        checks.compare(
            result,
            lambda x: conv.maxpool2d_forward(x, kernel, stride, padding),
            lambda dy, c: [conv.maxpool2d_backward(dy, c)],
            lambda t: F.max_pool2d(t, kernel, stride, padding),
            [x],
            [0],
            "random",
            finite_differences=False,
        )
    assert result.passed


@settings(max_examples=12, deadline=None)
@given(
    steps=st.integers(1, 9),
    seed=st.integers(0, 10_000),
    cell=st.sampled_from(["rnn", "lstm", "gru"]),
)
def test_recurrent_cells_over_sequence_lengths(steps, seed, cell):
    result = CHECKS[cell][1](np.random.default_rng(seed), lengths=(steps,))
    assert result.passed


@settings(max_examples=25, deadline=None)
@given(
    t=st.integers(1, 6),
    s=st.integers(1, 6),
    d=st.integers(1, 5),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_attention_over_random_masks(t, s, d, seed, data):
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    mask = np.array(
        data.draw(
            st.lists(st.lists(st.booleans(), min_size=s, max_size=s), min_size=t, max_size=t)
        ),
        dtype=bool,
    )
    mask[:, 0] = True  # every query may attend somewhere (an all-masked row is undefined in both)
    q, k, v = rng.normal(size=(t, d)), rng.normal(size=(s, d)), rng.normal(size=(s, d))
    result = fresh("attention")
    checks.compare(
        result,
        lambda q, k, v: attention.attention_forward(q, k, v, mask),
        attention.attention_backward,
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(mask)),
        [q, k, v],
        [0, 1, 2],
        "random",
        finite_differences=False,
    )
    assert result.passed


def test_from_scratch_networks_learn_the_digits():
    assert networks.train_mlp().test_accuracy >= 0.95
    assert networks.train_cnn().test_accuracy >= 0.95


@pytest.mark.slow  # a real training run of 10-20 s: not a unit test
def test_from_scratch_char_rnn_beats_the_unigram_entropy(shared_data):
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text()[:200_000]
    result = networks.train_char_rnn(text, steps=400)
    assert result.losses[-1] < result.extra["unigram_entropy"] - 0.5
    assert result.losses[0] == pytest.approx(result.extra["initial_loss"], abs=0.05)


def test_recurrent_weights_helper():
    p = recurrent.RecurrentWeights(np.ones((2, 3)), np.ones((2, 2)), np.ones(2), np.ones(2))
    assert all(float(a.sum()) == 0 for a in (p.zeros().w_ih, p.zeros().b_hh))
