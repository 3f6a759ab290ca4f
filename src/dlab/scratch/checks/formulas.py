"""The checks of the layer and sequence formulas: forward, autograd and finite differences.

Each `@check` function builds a few random float64 configurations and compares dlab.scratch's
NumPy forward and hand-written backward with torch's; see `checks/__init__.py` for the machinery.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlab.scratch import attention, conv, layers, norm, recurrent
from dlab.scratch.checks.machinery import CHECKS, CheckResult, check, compare, compare_value


@check("linear", "z = x Wᵀ + b")
def _linear(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("linear", CHECKS["linear"][0])
    for n, d, o in ((4, 3, 2), (2, 7, 5)):
        x, w, b = rng.normal(size=(n, d)), rng.normal(size=(o, d)), rng.normal(size=o)
        compare(
            result,
            layers.linear_forward,
            layers.linear_backward,
            F.linear,
            [x, w, b],
            [0, 1, 2],
            f"x{x.shape} W{w.shape}",
        )
    return result


def _elementwise(
    name: str, formula: str, reference: Callable[[torch.Tensor], torch.Tensor]
) -> None:
    @check(name, formula)
    def run(rng: np.random.Generator) -> CheckResult:
        forward, backward = (
            getattr(layers, f"{name}_forward"),
            getattr(layers, f"{name}_backward"),
        )  # looked up now
        result = CheckResult(name, formula)
        for shape in ((5,), (3, 4)):
            x = rng.normal(size=shape) * 2
            if name == "relu":
                x = np.where(np.abs(x) < 1e-3, 0.5, x)  # keep finite differences away from the kink
            compare(
                result,
                forward,
                lambda dy, c, backward=backward: [backward(dy, c)],
                reference,
                [x],
                [0],
                f"x{shape}",
            )
        return result


_elementwise("relu", "max(0, x)", torch.relu)
_elementwise("sigmoid", "1 / (1 + e⁻ˣ)", torch.sigmoid)
_elementwise("tanh", "(eˣ − e⁻ˣ) / (eˣ + e⁻ˣ)", torch.tanh)
_elementwise("gelu", "x · Φ(x)", F.gelu)


@check("softmax", "e^{zᵢ} / Σⱼ e^{zⱼ}")
def _softmax(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("softmax", CHECKS["softmax"][0])
    for shape in ((4, 5), (2, 3, 6)):
        z = rng.normal(size=shape) * 3
        forward = lambda z: (layers.softmax(z), layers.softmax(z))  # noqa: E731
        compare(
            result,
            forward,
            lambda dy, y: [layers.softmax_backward(dy, y)],
            lambda t: torch.softmax(t, -1),
            [z],
            [0],
            f"z{shape}",
        )
    big = np.array([[1000.0, 1001.0, 999.0]])  # stable: no overflow
    compare_value(
        result,
        "output (does e^z overflow?)",
        layers.softmax(big),
        torch.softmax(torch.tensor(big), -1).numpy(),
        "z = [1000, 1001, 999]",
    )
    return result


@check("log_softmax", "zᵢ − log Σⱼ e^{zⱼ}")
def _log_softmax(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("log_softmax", CHECKS["log_softmax"][0])
    for shape in ((4, 5), (3, 7)):
        z = rng.normal(size=shape) * 3
        forward = lambda z: (layers.log_softmax(z), layers.log_softmax(z))  # noqa: E731
        compare(
            result,
            forward,
            lambda dy, y: [layers.log_softmax_backward(dy, y)],
            lambda t: torch.log_softmax(t, -1),
            [z],
            [0],
            f"z{shape}",
        )
    return result


@check("cross_entropy", "−Σ q log softmax(z), q smoothed by ε")
def _cross_entropy(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("cross_entropy", CHECKS["cross_entropy"][0])
    for n, k, eps in ((6, 4, 0.0), (5, 10, 0.1)):
        z, y = rng.normal(size=(n, k)), rng.integers(0, k, n)

        def forward(z, eps=eps, y=y):
            loss, cache = layers.cross_entropy_forward(z, y, eps)
            return np.array(loss), cache

        compare(
            result,
            forward,
            lambda dy, c: [layers.cross_entropy_backward(c) * dy],
            lambda t, y=y, eps=eps: F.cross_entropy(t, torch.tensor(y), label_smoothing=eps),
            [z],
            [0],
            f"z({n},{k}) ε={eps}",
        )
    return result


@check("mse", "mean((ŷ − y)²)")
def _mse(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("mse", CHECKS["mse"][0])
    p, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))

    def forward(p, t):
        loss, diff = layers.mse_forward(p, t)
        return np.array(loss), diff

    compare(
        result,
        forward,
        lambda dy, d: [layers.mse_backward(d) * dy, -layers.mse_backward(d) * dy],
        F.mse_loss,
        [p, t],
        [0, 1],
        "(4, 3)",
    )
    return result


@check("vae_loss", "Σ BCE(x̂, x) + β·½Σ(μ² + σ² − log σ² − 1), z = μ + σ·ε")
def _vae_loss(rng: np.random.Generator) -> CheckResult:
    from torch.distributions import Normal, kl_divergence

    result = CheckResult("vae_loss", CHECKS["vae_loss"][0])
    for beta in (1.0, 4.0):
        logits, x = rng.normal(size=(3, 6)) * 3, rng.uniform(size=(3, 6))
        mu, log_var = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))

        def forward(logits, mu, log_var, x=x, beta=beta):
            loss, cache = layers.vae_loss_forward(logits, x, mu, log_var, beta)
            return np.array(loss), cache

        def reference(logits, mu, log_var, x=x, beta=beta):
            bce = F.binary_cross_entropy_with_logits(logits, torch.tensor(x), reduction="sum")
            prior = Normal(torch.zeros_like(mu), torch.ones_like(mu))
            kl = kl_divergence(Normal(mu, (0.5 * log_var).exp()), prior).sum()
            return (bce + beta * kl) / len(x)

        compare(result, forward, lambda dy, c: [g * dy for g in layers.vae_loss_backward(c)],
                reference, [logits, mu, log_var], [0, 1, 2], f"N 3, D 6, z 2, β {beta:g}")  # fmt: skip
    eps = rng.normal(size=(3, 2))

    def sample(mu, log_var):
        return layers.reparameterize_forward(mu, log_var, eps)

    compare(result, sample, lambda dz, c: list(layers.reparameterize_backward(dz, c)),
            lambda mu, log_var: mu + (0.5 * log_var).exp() * torch.tensor(eps),
            [rng.normal(size=(3, 2)), rng.normal(size=(3, 2))], [0, 1], "z = μ + σ·ε (3, 2)")  # fmt: skip
    return result


@check("l1_l2_penalty", "λ₁Σ|w| + (λ₂/2)Σw²")
def _penalties(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("l1_l2_penalty", CHECKS["l1_l2_penalty"][0])
    w = rng.normal(size=(3, 4))

    def forward(w):
        v1, g1 = layers.l1_penalty(w, 0.01)
        v2, g2 = layers.l2_penalty(w, 0.1)
        return np.array(v1 + v2), g1 + g2

    compare(
        result,
        forward,
        lambda dy, g: [g * dy],
        lambda t: 0.01 * t.abs().sum() + 0.05 * t.pow(2).sum(),
        [w],
        [0],
        "W(3, 4)",
    )
    return result


@check("dropout", "x · m / (1 − p)")
def _dropout(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("dropout", CHECKS["dropout"][0])
    x, mask, p = rng.normal(size=(4, 5)), (rng.random((4, 5)) > 0.3).astype(float), 0.3
    compare(
        result,
        lambda x: layers.dropout_forward(x, mask, p),
        lambda dy, s: [layers.dropout_backward(dy, s)],
        lambda t: t * torch.tensor(mask) / (1 - p),
        [x],
        [0],
        "x(4, 5) p=0.3",
    )
    torch.manual_seed(0)  # and the mask statistics match torch's: E[y] = x
    draws = F.dropout(torch.ones(200_000, dtype=torch.float64), p)
    result.forward = max(result.forward, 0.0 if abs(float(draws.mean()) - 1) < 0.01 else 1.0)
    return result


@check("embedding", "v = E[w] (gradient: scatter-add)")
def _embedding(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("embedding", CHECKS["embedding"][0])
    ids, table = np.array([[1, 3, 1], [0, 3, 2]]), rng.normal(size=(5, 4))
    compare(
        result,
        lambda i, e: layers.embedding_forward(i, e),
        lambda dy, c: [layers.embedding_backward(dy, c)],
        F.embedding,
        [ids, table],
        [1],
        "ids(2, 3) E(5, 4)",
    )
    return result


@check("conv2d", "y = b + ΣΣ x(s·i + d·u − p, s·j + d·v − p) · w(u, v)")
def _conv2d(
    rng: np.random.Generator, configs=((1, 0, 1), (2, 1, 1), (1, 2, 2), (2, 0, 2))
) -> CheckResult:
    result = CheckResult("conv2d", CHECKS["conv2d"][0])
    for stride, padding, dilation in configs:
        x, w, b = rng.normal(size=(2, 3, 7, 6)), rng.normal(size=(4, 3, 3, 2)), rng.normal(size=4)
        compare(
            result,
            lambda x, w, b, s=stride, p=padding, d=dilation: conv.conv2d_forward(x, w, b, s, p, d),
            conv.conv2d_backward,
            lambda x, w, b, s=stride, p=padding, d=dilation: F.conv2d(x, w, b, s, p, d),
            [x, w, b],
            [0, 1, 2],
            f"stride {stride} pad {padding} dil {dilation}",
        )
    return result


@check("max_pool2d", "max over each k×k window")
def _maxpool(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("max_pool2d", CHECKS["max_pool2d"][0])
    for kernel, stride, padding in ((2, 2, 0), (3, 2, 1)):
        x = rng.normal(size=(2, 2, 6, 7))
        compare(
            result,
            lambda x, k=kernel, s=stride, p=padding: conv.maxpool2d_forward(x, k, s, p),
            lambda dy, c: [conv.maxpool2d_backward(dy, c)],
            lambda t, k=kernel, s=stride, p=padding: F.max_pool2d(t, k, s, p),
            [x],
            [0],
            f"k {kernel} s {stride} p {padding}",
        )
    return result


@check("avg_pool2d", "mean over each k×k window")
def _avgpool(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("avg_pool2d", CHECKS["avg_pool2d"][0])
    for kernel, stride, padding in ((2, 2, 0), (3, 1, 1)):
        x = rng.normal(size=(2, 2, 6, 5))
        compare(
            result,
            lambda x, k=kernel, s=stride, p=padding: conv.avgpool2d_forward(x, k, s, p),
            lambda dy, c: [conv.avgpool2d_backward(dy, c)],
            lambda t, k=kernel, s=stride, p=padding: F.avg_pool2d(t, k, s, p),
            [x],
            [0],
            f"k {kernel} s {stride} p {padding}",
        )
    return result


@check("batch_norm", "γ (x − μ_B) / √(σ²_B + ε) + β")
def _batchnorm(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("batch_norm", CHECKS["batch_norm"][0])
    for shape in ((6, 3), (4, 3, 5, 5)):
        x, g, b = rng.normal(size=shape), rng.normal(size=shape[1]), rng.normal(size=shape[1])
        compare(
            result,
            norm.batchnorm_forward,
            norm.batchnorm_backward,
            lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True),
            [x, g, b],
            [0, 1, 2],
            f"x{shape}",
        )
    return result


@check("layer_norm", "γ (x − μ) / √(σ² + ε) + β over features")
def _layernorm(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("layer_norm", CHECKS["layer_norm"][0])
    x, g, b = rng.normal(size=(3, 4, 6)), rng.normal(size=6), rng.normal(size=6)
    compare(
        result,
        norm.layernorm_forward,
        norm.layernorm_backward,
        lambda x, g, b: F.layer_norm(x, (6,), g, b),
        [x, g, b],
        [0, 1, 2],
        "x(3, 4, 6)",
    )
    return result


def _recurrent(
    name: str, formula: str, gates: int, module: type[nn.RNNBase], forward, backward
) -> None:
    @check(name, formula)
    def run(rng: np.random.Generator, lengths=(1, 5)) -> CheckResult:
        result = CheckResult(name, formula)
        for steps in lengths:
            n, d, h = 3, 4, 5
            torch.manual_seed(0)
            reference_module = module(d, h, batch_first=True).double()
            weights = [
                p.detach().numpy().copy()
                for p in (
                    reference_module.weight_ih_l0,
                    reference_module.weight_hh_l0,
                    reference_module.bias_ih_l0,
                    reference_module.bias_hh_l0,
                )
            ]
            x, h0 = rng.normal(size=(n, steps, d)), rng.normal(size=(n, h))

            def ours(x, h0, w_ih, w_hh, b_ih, b_hh):
                p = recurrent.RecurrentWeights(w_ih, w_hh, b_ih, b_hh)
                if gates == 4:
                    out, _, caches = forward(x, h0, np.zeros_like(h0), p)
                else:
                    out, caches = forward(x, h0, p)
                return out, (caches, p)

            def grads(dy, cache):
                caches, p = cache
                result_grads = backward(dy, caches, p)
                dx, dh0, g = result_grads[0], result_grads[1], result_grads[-1]
                return [dx, dh0, g.w_ih, g.w_hh, g.b_ih, g.b_hh]

            def reference(x, h0, w_ih, w_hh, b_ih, b_hh, reference_module=reference_module):
                params = {
                    "weight_ih_l0": w_ih,
                    "weight_hh_l0": w_hh,
                    "bias_ih_l0": b_ih,
                    "bias_hh_l0": b_hh,
                }
                state = (h0[None], torch.zeros_like(h0)[None]) if gates == 4 else h0[None]
                return torch.func.functional_call(reference_module, params, (x, state))[0]

            compare(
                result,
                ours,
                grads,
                reference,
                [x, h0, *weights],
                [0, 1, 2, 3, 4, 5],
                f"T={steps} N={n} D={d} H={h}",
                finite_differences=steps <= 5,
            )
        return result


_recurrent(
    "rnn",
    "h_t = tanh(W_ih x_t + W_hh h_{t−1} + b)",
    1,
    nn.RNN,
    recurrent.rnn_forward,
    recurrent.rnn_backward,
)
_recurrent(
    "lstm",
    "c_t = f⊙c_{t−1} + i⊙g,  h_t = o⊙tanh(c_t)",
    4,
    nn.LSTM,
    recurrent.lstm_forward,
    recurrent.lstm_backward,
)
_recurrent(
    "gru", "h_t = (1−z)⊙n + z⊙h_{t−1}", 3, nn.GRU, recurrent.gru_forward, recurrent.gru_backward
)


@check("attention", "softmax(Q Kᵀ / √d_k + M) V")
def _attention(
    rng: np.random.Generator, configs=((3, 4, 5, None), (4, 4, 3, "causal"), (2, 5, 4, "padding"))
) -> CheckResult:
    result = CheckResult("attention", CHECKS["attention"][0])
    for t, s, d, kind in configs:
        q, k, v = rng.normal(size=(2, t, d)), rng.normal(size=(2, s, d)), rng.normal(size=(2, s, d))
        mask = None
        if kind == "causal":
            mask = np.tril(np.ones((t, s), dtype=bool), s - t)[None].repeat(2, 0)
        elif kind == "padding":
            mask = np.ones((2, t, s), dtype=bool)
            mask[1, :, s // 2 :] = False
        reference_mask = None if mask is None else torch.tensor(mask)
        compare(
            result,
            lambda q, k, v, m=mask: attention.attention_forward(q, k, v, m),
            attention.attention_backward,
            lambda q, k, v, m=reference_mask: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
            [q, k, v],
            [0, 1, 2],
            f"T={t} S={s} d={d} mask={kind}",
        )
    return result


@check("multi_head_attention", "Concat(head₁…head_h) W_o")
def _mha(rng: np.random.Generator) -> CheckResult:
    result = CheckResult("multi_head_attention", CHECKS["multi_head_attention"][0])
    d, heads = 8, 2
    torch.manual_seed(0)
    module = nn.MultiheadAttention(d, heads, batch_first=True).double()
    wq, wk, wv = (w.detach().numpy().copy() for w in module.in_proj_weight.chunk(3))
    bq, bk, bv = (b.detach().numpy().copy() for b in module.in_proj_bias.chunk(3))
    wo, bo = (
        module.out_proj.weight.detach().numpy().copy(),
        module.out_proj.bias.detach().numpy().copy(),
    )
    query, key = rng.normal(size=(2, 3, d)), rng.normal(size=(2, 4, d))
    mask = np.ones((2, 3, 4), dtype=bool)
    mask[0, :, 3] = False

    def ours(query, key, wq, wk, wv, wo):
        weights = {"w_q": wq, "b_q": bq, "w_k": wk, "b_k": bk, "w_v": wv, "b_v": bv}
        return attention.mha_forward(
            query, key, key, {**weights, "w_o": wo, "b_o": bo}, heads, mask
        )

    def grads(dy, cache):
        dq, dk, dv, g = attention.mha_backward(dy, cache)
        return [dq, dk + dv, g["w_q"], g["w_k"], g["w_v"], g["w_o"]]

    def reference(query, key, wq, wk, wv, wo):
        params = {
            "in_proj_weight": torch.cat([wq, wk, wv]),
            "in_proj_bias": module.in_proj_bias.detach(),
            "out_proj.weight": wo,
            "out_proj.bias": module.out_proj.bias.detach(),
        }
        return torch.func.functional_call(
            module,
            params,
            (query, key, key),
            {"attn_mask": ~torch.tensor(mask).repeat_interleave(heads, 0)},
        )[0]

    compare(
        result,
        ours,
        grads,
        reference,
        [query, key, wq, wk, wv, wo],
        [0, 1, 2, 3, 4, 5],
        f"d={d} heads={heads} masked",
    )
    return result
