"""Why a model decided: integrated gradients (captum) over pixels and tokens, and attention maps.

Integrated gradients (Sundararajan et al.) attribute a prediction to each input feature by
integrating the gradient along the straight path from a baseline (zeros: the mean image after
normalisation; padding tokens for text) to the input; attributions sum to the logit difference.
"""

from __future__ import annotations

import torch
from torch import nn

from dlab.models.attention import MultiHeadAttention


def image_attributions(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, steps: int = 32
) -> torch.Tensor:
    """(N, C, H, W) integrated-gradients maps for the predicted classes."""
    from captum.attr import IntegratedGradients

    model.eval()
    return (
        IntegratedGradients(model)
        .attribute(images, baselines=torch.zeros_like(images), target=targets, n_steps=steps)
        .detach()
    )


def first_embedding(model: nn.Module) -> nn.Embedding | None:
    """The token embedding a text model starts with (also inside a Hugging Face model)."""
    return next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)


def token_attributions(
    model: nn.Module, tokens: torch.Tensor, targets: torch.Tensor, pad_id: int, steps: int = 32
) -> torch.Tensor:
    """(N, T) attribution of each token: integrated gradients at the embedding, summed over its width."""
    from captum.attr import LayerIntegratedGradients

    embedding = first_embedding(model)
    if embedding is None:
        raise ValueError("the model has no embedding layer")
    model.eval()
    with torch.backends.cudnn.flags(
        enabled=False
    ):  # recurrent layers need train-mode-free backward here
        attributions = LayerIntegratedGradients(model, embedding).attribute(
            tokens,
            baselines=torch.full_like(tokens, pad_id),
            target=targets,
            n_steps=steps,
            internal_batch_size=8,
        )
    return attributions.sum(-1).detach()


def attention_weights(model: nn.Module, inputs) -> list[torch.Tensor]:
    """Self-attention weights (heads, T, T) of every layer, for the first example of `inputs`."""
    layers = [
        m
        for name, m in model.named_modules()
        if isinstance(m, MultiHeadAttention) and not name.endswith("cross")
    ]
    for layer in layers:
        layer.record_weights = True
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs) if isinstance(inputs, tuple) else model(inputs)
        return [layer.last_weights[0] for layer in layers if layer.last_weights is not None]
    finally:
        for layer in layers:
            layer.record_weights, layer.last_weights = False, None
