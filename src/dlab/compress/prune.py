"""Pruning: remove the smallest weights (unstructured) or whole channels and units (structured).

Unstructured global magnitude pruning zeroes the `amount` smallest |w| / RMS(its tensor) across
every weight matrix, kernel, embedding table and recurrent weight: the model keeps its shape (the saving is in compressed size), and fine-tuning with the
masks held lets the rest compensate. Structured pruning removes the conv channels and hidden units
whose weights have the smallest L1 norm and rebuilds a smaller model: real speed, for `cnn` and `mlp`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from dlab.errors import DlabError
from dlab.training.callbacks import Callback


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, name) of every weight matrix: Linear, Conv2d, Embedding, and the RNN/LSTM/GRU ones.

    Biases and normalisation parameters stay: they are few and pruning them hurts most.
    """
    found = []
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d | nn.Embedding):
            found.append((module, "weight"))
        elif isinstance(module, nn.RNNBase):  # names stay put while pruned (weight_ih_l0_orig)
            found += [(module, n) for n in module._flat_weights_names if n.startswith("weight_")]
    return found


def global_magnitude(model: nn.Module, amount: float) -> nn.Module:
    """Mask the `amount` fraction of smallest weights across the whole model (masks stay while fine-tuning)."""
    targets = prunable(model)
    # each weight's magnitude relative to its own tensor's RMS: an embedding drawn from N(0, 1)
    # and LSTM weights from U(±1/√h) compete on equal terms instead of the table surviving whole
    # while the recurrent matrices vanish (which took an SST-2 LSTM to chance accuracy)
    scores = {}
    for module, name in targets:
        weight = getattr(module, name).detach()
        scores[(module, name)] = weight.abs() / weight.pow(2).mean().sqrt().clamp_min(1e-12)
    prune.global_unstructured(
        targets, pruning_method=prune.L1Unstructured, importance_scores=scores, amount=amount
    )
    return model


class MakePermanent(Callback):
    """After fine-tuning, fold the masks into the weights so the model saves as a plain one."""

    def on_fit_end(self, trainer) -> None:
        for module, name in prunable(trainer.model):
            if hasattr(module, f"{name}_mask"):
                prune.remove(module, name)


def nonzero_fraction(model: nn.Module) -> float:
    """Share of Linear/Conv2d weights that are not zero."""
    weights = [getattr(m, name).detach() for m, name in prunable(model)]
    return float(
        sum(int(torch.count_nonzero(w)) for w in weights) / max(sum(w.numel() for w in weights), 1)
    )


def _keep(weight: torch.Tensor, amount: float) -> torch.Tensor:
    """Indices of the output channels/units to keep: the largest L1 norms, in their original order."""
    norms = weight.abs().flatten(1).sum(1)
    count = max(1, round(len(norms) * (1 - amount)))
    return norms.topk(count).indices.sort().values


def _sliced_linear(
    layer: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None
) -> nn.Linear:
    weight = layer.weight.detach()
    weight = weight[rows] if rows is not None else weight
    weight = weight[:, cols] if cols is not None else weight
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=layer.bias is not None)
    new.weight.data.copy_(weight)
    if layer.bias is not None:
        new.bias.data.copy_(layer.bias.detach()[rows] if rows is not None else layer.bias.detach())
    return new


def structured(model: nn.Module, recipe_model: object, amount: float) -> tuple[nn.Module, dict]:
    """A smaller copy of a `cnn` or `mlp`, and the model-section fields that describe it."""
    from dlab.models.cnn import CNN
    from dlab.models.mlp import MLP

    if isinstance(model, CNN):
        return _structured_cnn(model, recipe_model, amount)
    if isinstance(model, MLP):
        return _structured_mlp(model, recipe_model, amount)
    raise DlabError(
        "--prune --structured: supported for the cnn and mlp models; use unstructured pruning for others"
    )


def _structured_cnn(model: nn.Module, config: object, amount: float) -> tuple[nn.Module, dict]:
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.features if isinstance(m, nn.BatchNorm2d)]
    keeps = [_keep(conv.weight.detach(), amount) for conv in convs]
    channels = [len(k) for k in keeps]
    from dlab.models.cnn import CNN

    input_shape = model.input_shape
    small = CNN(
        input_shape,
        model.classifier[-1].out_features,
        config.model_copy(update={"channels": channels}),
    )
    small_convs = [m for m in small.features if isinstance(m, nn.Conv2d)]
    small_norms = [m for m in small.features if isinstance(m, nn.BatchNorm2d)]
    previous = None
    for conv, new, keep in zip(convs, small_convs, keeps, strict=True):
        weight = conv.weight.detach()[keep]
        if previous is not None:
            weight = weight[:, previous]
        new.weight.data.copy_(weight)
        if conv.bias is not None:
            new.bias.data.copy_(conv.bias.detach()[keep])
        previous = keep
    for norm, new, keep in zip(norms, small_norms, keeps, strict=False):
        for attribute in ("weight", "bias", "running_mean", "running_var"):
            getattr(new, attribute).data.copy_(getattr(norm, attribute).detach()[keep])
    # the first dense layer reads (channels, h, w) flattened: keep the columns of kept channels
    first = next(m for m in model.classifier if isinstance(m, nn.Linear))
    spatial = first.in_features // convs[-1].out_channels
    columns = (keeps[-1][:, None] * spatial + torch.arange(spatial)).flatten()
    dense = [m for m in model.classifier if isinstance(m, nn.Linear)]
    small_dense = [m for m in small.classifier if isinstance(m, nn.Linear)]
    small_dense[0].weight.data.copy_(first.weight.detach()[:, columns])
    small_dense[0].bias.data.copy_(first.bias.detach())
    for old, new in zip(dense[1:], small_dense[1:], strict=True):
        new.load_state_dict(old.state_dict())
    return small, {"channels": channels}


def _structured_mlp(model: nn.Module, config: object, amount: float) -> tuple[nn.Module, dict]:
    from dlab.models.mlp import MLP

    linears = [m for m in model.layers if isinstance(m, nn.Linear)]
    norms = [m for m in model.layers if isinstance(m, nn.BatchNorm1d)]
    keeps = [_keep(layer.weight.detach(), amount) for layer in linears[:-1]]
    hidden = [len(k) for k in keeps]
    small = MLP(
        linears[0].in_features,
        linears[-1].out_features,
        config.model_copy(update={"hidden": hidden}),
    )
    small_linears = [m for m in small.layers if isinstance(m, nn.Linear)]
    small_norms = [m for m in small.layers if isinstance(m, nn.BatchNorm1d)]
    for index, (old, new) in enumerate(zip(linears, small_linears, strict=True)):
        rows = keeps[index] if index < len(keeps) else None
        cols = keeps[index - 1] if index > 0 else None
        sliced = _sliced_linear(old, rows, cols)
        new.load_state_dict(sliced.state_dict())
    for norm, new, keep in zip(norms, small_norms, keeps, strict=False):
        for attribute in ("weight", "bias", "running_mean", "running_var"):
            getattr(new, attribute).data.copy_(getattr(norm, attribute).detach()[keep])
    return small, {"hidden": hidden}
