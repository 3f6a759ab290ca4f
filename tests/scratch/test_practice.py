"""The practice formulas' checks fail on the bug each guards against (a plausible one each)."""

from __future__ import annotations

import numpy as np
import pytest

from dlab.scratch import attention, compress, conv, decoding, layers, norm, optim, private
from dlab.scratch.checks import run_checks

pytestmark = pytest.mark.unit


def _per_tensor_clip(grads, max_norm, eps=1e-6):  # each tensor clipped on its own norm
    total = float(np.sqrt(sum((g * g).sum() for g in grads)))
    return [g * min(1.0, max_norm / (np.linalg.norm(g) + eps)) for g in grads], total


def _biased_running(mean, var, x, momentum=0.1):  # the variance the batch was normalised with
    axes = (0, *range(2, x.ndim))
    return (1 - momentum) * mean + momentum * x.mean(axis=axes), (
        1 - momentum
    ) * var + momentum * x.var(axis=axes)


def _half_up(x, bits=8):  # rounds ties up, not to even
    scale = float(np.abs(x).max()) / 127
    return np.clip(np.floor(x / scale + 0.5), -128, 127).astype(np.int64), scale


def _keep_smallest(w, amount):
    return 1.0 - compress.magnitude_prune_mask(w, 1.0 - amount)


def _clip_the_sum(per_sample, max_norm, noise_multiplier, noise):  # clips the batch, not each
    total = per_sample.sum(axis=0)
    total = total * min(1.0, max_norm / (np.linalg.norm(total) + 1e-6))
    return (total + noise_multiplier * max_norm * noise) / len(per_sample)


def _forgets_t_squared(student, teacher, temperature):
    loss, cache = compress.distillation_forward(student, teacher, temperature)
    return loss / temperature**2, cache


BUGS = {
    "conv1d": (
        conv,
        "conv1d_forward",
        lambda real: lambda x, w, b, s=1, p=0, d=1: real(x, w, b, s, p, 1),
    ),
    "clip_grad_norm": (optim, "clip_grad_norm", lambda real: _per_tensor_clip),
    "batch_norm_running": (norm, "batchnorm_running_update", lambda real: _biased_running),
    "beam_search": (
        decoding,
        "beam_search",
        lambda real: (
            lambda step, bos, eos, n, beam, lp=0.0: real(step, bos, eos, n, min(beam, 2), lp)
        ),
    ),
    "lora": (
        layers,
        "lora_forward",
        lambda real: lambda x, w, b, a, up, alpha: real(x, w, b, a, up, alpha * a.shape[0]),
    ),
    "quantize_int8": (compress, "quantize_symmetric", lambda real: _half_up),
    "prune_magnitude": (compress, "magnitude_prune_mask", lambda real: _keep_smallest),
    "distillation": (compress, "distillation_forward", lambda real: _forgets_t_squared),
    "dp_sgd": (private, "dp_sgd_gradient", lambda real: _clip_the_sum),
    "positional_encoding": (  # sin and cos swapped
        attention,
        "positional_encoding",
        lambda real: lambda t, d: real(t, d).reshape(t, -1, 2)[:, :, ::-1].reshape(t, d),
    ),
    "sampling": (  # the temperature forgotten
        decoding,
        "sampling_probabilities",
        lambda real: lambda z, temperature=1.0, top_k=None, top_p=None: real(z, 1.0, top_k, top_p),
    ),
}


@pytest.mark.parametrize("name", list(BUGS))
def test_the_check_passes_and_fails_on_its_bug(name, monkeypatch):
    (right,) = run_checks([name])
    assert right.passed, right.problems
    module, attribute, bug = BUGS[name]
    monkeypatch.setattr(module, attribute, bug(getattr(module, attribute)))
    (wrong,) = run_checks([name])
    assert not wrong.passed and wrong.problems, name


def test_beam_search_beats_greedy_where_greedy_is_fooled():
    # the first step's best token (1: p 0.6) leads only to poor continuations; 2 leads to a sure one
    table = {(): [0.0, 0.6, 0.4], (1,): [0.5, 0.0, 0.5], (2,): [1.0, 0.0, 0.0]}

    def step(prefix):
        probs = np.array(table.get(tuple(prefix[1:]), [1.0, 0.0, 0.0]))
        with np.errstate(divide="ignore"):
            return np.log(probs)

    assert decoding.greedy_decode(step, bos=9, eos=0, max_len=3) == [1, 0]  # 0.6 · 0.5 = 0.30
    best, score = decoding.beam_search(step, bos=9, eos=0, max_len=3, beam=2)
    assert best == [2, 0] and np.isclose(np.exp(score), 0.4)  # 0.4 · 1.0 = 0.40


def test_fedavg_weights_clients_by_examples():
    a, b = [np.array([1.0, 2.0]), np.array([[0.0]])], [np.array([3.0, 6.0]), np.array([[4.0]])]
    averaged = private.fedavg([a, b], [100, 300])
    assert np.allclose(averaged[0], [2.5, 5.0]) and np.allclose(averaged[1], [[3.0]])
