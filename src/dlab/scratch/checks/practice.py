"""The checks of the practice formulas: 1-D convolution, gradient clipping, batch norm's running
statistics, beam search, LoRA, quantization, pruning, distillation and DP-SGD's clipping.

Where a formula has a gradient, `compare` checks it as for the layers; the others (an update, a
mask, a search) are compared with what torch does, or with exhaustive search, value for value.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlab.scratch import attention, compress, conv, decoding, layers, norm, optim, private
from dlab.scratch.checks.machinery import (
    CHECKS,
    CheckResult,
    check,
    compare,
    compare_value,
    difference,
)


@check("conv1d", "y = b + ΣΣ x(s·t + d·u − p) · w(u)")
def _conv1d(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("conv1d", CHECKS["conv1d"][0])
    for stride, padding, dilation in ((1, 0, 1), (2, 2, 1), (1, 3, 2)):
        x, w, b = rng.normal(size=(2, 3, 11)), rng.normal(size=(4, 3, 3)), rng.normal(size=4)
        compare(
            result,
            lambda x, w, b, s=stride, p=padding, d=dilation: conv.conv1d_forward(x, w, b, s, p, d),
            conv.conv1d_backward,
            lambda x, w, b, s=stride, p=padding, d=dilation: F.conv1d(x, w, b, s, p, d),
            [x, w, b],
            [0, 1, 2],
            f"stride {stride} pad {padding} dil {dilation}",
        )
    return result


@check("clip_grad_norm", "g ← g · min(1, c / ‖g‖)")
def _clip(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("clip_grad_norm", CHECKS["clip_grad_norm"][0])
    for max_norm in (0.5, 100.0):  # clipped, and left alone
        grads = [rng.normal(size=(3, 4)), rng.normal(size=5)]
        tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
        for t, g in zip(tensors, grads, strict=True):
            t.grad = torch.tensor(g)
        total = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
        clipped, ours_total = optim.clip_grad_norm(grads, max_norm)
        shape = f"max_norm {max_norm:g}"
        compare_value(result, "‖g‖ before clipping", ours_total, total.item(), shape)
        for i, (ours, t) in enumerate(zip(clipped, tensors, strict=True)):
            compare_value(result, f"clipped gradient {i}", ours, t.grad.numpy(), shape)
    return result


@check("batch_norm_running", "r ← (1 − m) r + m · stat, unbiased variance")
def _running(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("batch_norm_running", CHECKS["batch_norm_running"][0])
    for shape in ((8, 3), (4, 3, 5, 5)):
        module = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(3, momentum=0.1).double()
        mean, var = np.zeros(3), np.ones(3)
        for _ in range(3):  # three training batches
            x = rng.normal(loc=2.0, scale=3.0, size=shape)
            module.train()(torch.tensor(x))
            mean, var = norm.batchnorm_running_update(mean, var, x, 0.1)
        compare_value(result, "running mean", mean, module.running_mean.numpy(), f"x{shape}")
        compare_value(result, "running variance", var, module.running_var.numpy(), f"x{shape}")
    return result


@check("beam_search", "the best of `beam` prefixes per step = exhaustive search")
def _beam(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("beam_search", CHECKS["beam_search"][0])
    vocab, eos, steps = 4, 0, 4
    transitions = np.log(rng.dirichlet(np.ones(vocab) * 0.5, size=vocab + 1))  # (previous, next)

    def step(prefix: list[int]) -> np.ndarray:
        return transitions[prefix[-1]]  # a Markov "decoder": the next token depends on the last

    def log_prob(tokens: tuple[int, ...]) -> float:
        previous, total = vocab, 0.0  # vocab: the start token's row
        for token in tokens:
            total, previous = total + transitions[previous, token], token
        return total

    everything = [  # every sequence that ends at eos, or runs to `steps` tokens without one
        seq
        for length in range(1, steps + 1)
        for seq in itertools.product(range(vocab), repeat=length)
        if eos not in seq[:-1] and (seq[-1] == eos or length == steps)
    ]
    exhaustive = max(everything, key=log_prob)
    ours, score = decoding.beam_search(step, vocab, eos, steps, beam=vocab**steps)
    shape = f"V={vocab} T={steps}"
    result.shapes.append(shape)
    if tuple(ours) != exhaustive:
        result.forward = 1.0
        result.problems.append(
            f"[{shape}] a beam wide enough for everything found {ours}, exhaustive search {list(exhaustive)}"
        )
    compare_value(result, "best log-probability", score, log_prob(exhaustive), shape)
    greedy = decoding.greedy_decode(step, vocab, eos, steps)
    narrow, _ = decoding.beam_search(step, vocab, eos, steps, beam=1)
    if greedy != narrow:
        result.forward = 1.0
        result.problems.append(f"[{shape}] beam 1 found {narrow}, greedy search {greedy}")
    return result


@check("lora", "y = x Wᵀ + b + (α/r) x Aᵀ Bᵀ, W frozen")
def _lora(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("lora", CHECKS["lora"][0])
    w, b = rng.normal(size=(5, 6)), rng.normal(size=5)
    for rank, alpha in ((2, 4.0), (3, 3.0)):
        x, a, up = (
            rng.normal(size=(2, 3, 6)),
            rng.normal(size=(rank, 6)),
            rng.normal(size=(5, rank)),
        )
        compare(
            result,
            lambda x, a, up, alpha=alpha: layers.lora_forward(x, w, b, a, up, alpha),
            layers.lora_backward,
            lambda x, a, up, alpha=alpha, rank=rank: (
                F.linear(x, torch.tensor(w), torch.tensor(b))
                + (alpha / rank) * F.linear(F.linear(x, a), up)
            ),
            [x, a, up],
            [0, 1, 2],
            f"r {rank} α {alpha:g}",
        )
    return result


@check("quantize_int8", "q = clamp(round(x / s), −128, 127), s = max|x| / 127")
def _quantize(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("quantize_int8", CHECKS["quantize_int8"][0])
    for shape in ((4, 5), (3, 2, 6)):
        # torch quantizes float32: values that are exact there (a power-of-two scale), with
        # ties (k + ½ steps) to show the rounding is half to even, and the largest at 127 steps
        steps = rng.integers(-126, 127, size=shape) + rng.choice([0.2, 0.5, 0.7], size=shape)
        steps.flat[0], steps.flat[1], steps.flat[2] = 127.0, 2.5, -3.5
        x = steps * 2.0**-4
        q, scale = compress.quantize_symmetric(x)
        # torch's fake quantization (what quantization-aware training runs): round, clamp and
        # scale back, in float32; torch.quantize_per_tensor would say the same, but is deprecated
        fake = torch.fake_quantize_per_tensor_affine(
            torch.tensor(x, dtype=torch.float32), scale, 0, -128, 127
        ).double()
        compare_value(result, "integers", q, (fake / scale).round().numpy(), f"x{shape}")
        compare_value(
            result, "dequantized", compress.dequantize(q, scale), fake.numpy(), f"x{shape}"
        )
    return result


@check("prune_magnitude", "mask: the amount·n smallest |w| are zeroed")
def _prune(rng: np.random.Generator) -> CheckResult:
    from torch.nn.utils import prune

    result = CheckResult("prune_magnitude", CHECKS["prune_magnitude"][0])
    for amount in (0.3, 0.75):
        layer = nn.Linear(8, 6).double()
        with torch.no_grad():
            layer.weight.copy_(torch.tensor(rng.normal(size=(6, 8))))
        w = layer.weight.detach().numpy().copy()
        prune.l1_unstructured(layer, "weight", amount=amount)
        compare_value(
            result,
            "mask",
            compress.magnitude_prune_mask(w, amount),
            layer.weight_mask.numpy(),
            f"amount {amount:g}",
        )
    return result


@check("distillation", "T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))")
def _distillation(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("distillation", CHECKS["distillation"][0])
    for temperature in (1.0, 4.0):
        student, teacher = rng.normal(size=(5, 7)) * 2, rng.normal(size=(5, 7)) * 2

        def forward(student, teacher=teacher, t=temperature):
            loss, cache = compress.distillation_forward(student, teacher, t)
            return np.array(loss), cache

        compare(
            result,
            forward,
            lambda dy, c: [compress.distillation_backward(c) * dy],
            lambda s, teacher=teacher, t=temperature: (
                F.kl_div(
                    F.log_softmax(s / t, -1),
                    F.softmax(torch.tensor(teacher) / t, -1),
                    reduction="batchmean",
                )
                * t**2
            ),
            [student],
            [0],
            f"T {temperature:g}",
        )
    return result


@check("dp_sgd", "(Σ clip(g_i, C) + σ C ξ) / B, per-example gradients")
def _dp_sgd(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("dp_sgd", CHECKS["dp_sgd"][0])
    x, y, theta = rng.normal(size=(6, 4)), rng.normal(size=6), rng.normal(size=4)
    noise = rng.normal(size=4)

    def loss(theta: torch.Tensor, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return 0.5 * (xi @ theta - yi) ** 2  # one example's squared error

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(
        torch.tensor(theta), torch.tensor(x), torch.tensor(y)
    )  # torch's per-example gradients, as Opacus computes them
    for max_norm, sigma in ((0.5, 0.0), (1.0, 1.3)):
        norms = per_sample.norm(dim=1, keepdim=True)
        clipped = per_sample * (max_norm / (norms + 1e-6)).clamp(max=1.0)
        reference = (clipped.sum(0) + sigma * max_norm * torch.tensor(noise)) / len(x)
        ours_per_sample = x * (x @ theta - y)[:, None]  # ∂/∂θ ½(xθ − y)² = x (xθ − y)
        ours = private.dp_sgd_gradient(ours_per_sample, max_norm, sigma, noise)
        compare_value(
            result, "private gradient", ours, reference.numpy(), f"C {max_norm:g} σ {sigma:g}"
        )
    return result


@check("positional_encoding", "sin, cos of p / 10000^(2i/d)")
def _positional(rng: np.random.Generator) -> CheckResult:
    from dlab.models.blocks import SinusoidalPosition

    result = CheckResult("positional_encoding", CHECKS["positional_encoding"][0])
    for length, d in ((50, 16), (7, 6)):
        ours = attention.positional_encoding(length, d)
        position = torch.arange(length, dtype=torch.float64)[:, None]
        i = torch.arange(0, d, 2, dtype=torch.float64)
        angle = position / 10000 ** (i / d)
        reference = torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(length, d)
        compare_value(result, "encoding", ours, reference.numpy(), f"T={length} d={d}")
        # dlab's own layer computes its table in float32: the same to float32's precision
        table = SinusoidalPosition(d, length).table.double().numpy()
        error, problem = difference("dlab's float32 table", ours, table, 1e-5)
        result.problems += [f"[T={length} d={d}] {problem}"] if problem else []
        result.forward = max(result.forward, 0.0 if problem is None else error)
    return result


@check("sampling", "softmax(z/τ) in the top k and top p")
def _sampling(rng: np.random.Generator) -> CheckResult:
    from dlab.models.blocks import sampling_logits

    result = CheckResult("sampling", CHECKS["sampling"][0])
    logits = rng.normal(size=(3, 12)) * 2
    for temperature, top_k, top_p in (
        (1.0, None, None),
        (0.7, 5, None),
        (1.3, None, 0.8),
        (0.9, 6, 0.6),
    ):
        ours = decoding.sampling_probabilities(logits, temperature, top_k, top_p)
        theirs = sampling_logits(torch.tensor(logits), temperature, top_k, top_p).softmax(-1)
        compare_value(
            result, "probabilities", ours, theirs.numpy(), f"τ {temperature:g} k {top_k} p {top_p}"
        )
    return result
