"""Autoencoders for images: an encoder to a small code z, a decoder back to pixel logits.

- `autoencoder`: fully connected, d-500-500-2000-z and back (the architecture of DEC, Xie et al.
  2016, whose codes k-means then clusters);
- `conv_autoencoder`: strided 3×3 convolutions down to z, transposed convolutions back up;
- `vae` (Kingma & Welling 2014): the encoder gives the mean μ and log-variance log σ² of
  q(z|x) = N(μ, σ²); training decodes z = μ + σ·ε, ε ~ N(0, I) (the reparameterisation, which
  lets gradients reach μ and σ) and adds β·KL(q(z|x) ‖ N(0, I)) to the reconstruction loss;
  `sample` decodes z ~ N(0, I) into new images.

Every model returns logits of the pixels (shaped as the input): the loss is `bce`, binary cross
entropy against pixel intensities in [0, 1]. `encode(x)` gives the codes (μ for the VAE) that
clustering and anomaly scores read.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from dlab.data.bundle import DataMeta
from dlab.recipe import ModelConfig
from dlab.registry import MODELS


class AutoencoderConfig(ModelConfig):
    """A fully connected autoencoder; the defaults are DEC's d-500-500-2000-10."""

    hidden: list[int] = Field(
        default_factory=lambda: [500, 500, 2000],
        description="encoder widths (the decoder mirrors them)",
    )
    latent: int = Field(10, ge=1, description="size of the code z")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the input (a denoising AE)")


class ConvAutoencoderConfig(ModelConfig):
    """Strided convolutions (each halves the image) to a code, transposed ones back."""

    channels: list[int] = Field(default_factory=lambda: [32, 64, 128], description="per level")
    latent: int = Field(10, ge=1, description="size of the code z")


class VAEConfig(ModelConfig):
    """A variational autoencoder over a fully connected or convolutional backbone."""

    backbone: Literal["mlp", "conv"] = Field("mlp", description="the encoder and decoder layers")
    hidden: list[int] = Field(default_factory=lambda: [512, 256], description="mlp widths")
    channels: list[int] = Field(default_factory=lambda: [32, 64], description="conv channels")
    latent: int = Field(16, ge=1, description="size of z")
    beta: float = Field(1.0, ge=0, description="weight of the KL term (β-VAE; 1: the ELBO)")


def _mlp(sizes: list[int], last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DenseCoder(nn.Module):
    """Flatten -> MLP -> `out` features, and z -> MLP -> pixel logits shaped as the input."""

    def __init__(self, shape: tuple[int, ...], hidden: list[int], out: int, latent: int):
        super().__init__()
        pixels = math.prod(shape)
        self.shape = tuple(shape)
        self.encoder = nn.Sequential(nn.Flatten(), _mlp([pixels, *hidden, out], False))
        self.decoder = _mlp([latent, *hidden[::-1], pixels], False)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(len(z), *self.shape)


class ConvCoder(nn.Module):
    """Stride-2 convolutions -> linear `out`; linear -> transposed convolutions -> logits."""

    def __init__(self, shape: tuple[int, ...], channels: list[int], out: int, latent: int):
        super().__init__()
        c, h, w = shape
        self.shape = tuple(shape)
        down: list[nn.Module] = []
        sizes = [(h, w)]
        for a, b in zip([c, *channels], channels, strict=False):
            down += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU()]
            sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
        self.grid = (channels[-1], *sizes[-1])
        self.encoder = nn.Sequential(*down, nn.Flatten(), nn.Linear(math.prod(self.grid), out))
        self.project = nn.Sequential(nn.Linear(latent, math.prod(self.grid)), nn.ReLU())
        up: list[nn.Module] = []
        levels = [c, *channels][::-1]
        for k, (a, b) in enumerate(itertools.pairwise(levels)):
            target = sizes[-k - 2]
            extra = (target[0] - (2 * sizes[-k - 1][0] - 1), target[1] - (2 * sizes[-k - 1][1] - 1))
            up.append(nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=extra))
            if k < len(levels) - 2:
                up += [nn.BatchNorm2d(b), nn.ReLU()]
        self.up = nn.Sequential(*up)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.project(z).view(len(z), *self.grid))


class Autoencoder(nn.Module):
    """x -> z -> logits of x."""

    def __init__(self, coder: nn.Module, dropout: float = 0.0):
        super().__init__()
        self.coder = coder
        self.noise = nn.Dropout(dropout)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.coder.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.coder.decode(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(self.noise(x)))  # (B, C, H, W) -> (B, C, H, W) logits


class VAE(nn.Module):
    """x -> (μ, log σ²) -> z = μ + σ·ε -> logits of x; β·KL joins the loss through batch_penalty."""

    def __init__(self, coder: nn.Module, latent: int, beta: float):
        super().__init__()
        self.coder, self.latent, self.beta = coder, latent, beta
        self.pixels = math.prod(coder.shape)
        self._kl: torch.Tensor | None = None

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = self.coder.encoder(x).chunk(2, dim=-1)
        return mu, log_var.clamp(-30, 20)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.moments(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.coder.decode(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, log_var = self.moments(x)
        z = mu + (0.5 * log_var).exp() * torch.randn_like(mu) if self.training else mu
        self._kl = kl_divergence(mu, log_var)
        return self.decode(z)

    def batch_penalty(self, x: torch.Tensor) -> torch.Tensor | None:
        """β·KL per sample over the pixel count: with `bce` (a mean over pixels) the objective is
        the negative ELBO divided by the number of pixels."""
        if self._kl is None or not self.training:
            return None
        return self.beta * self._kl.mean() / self.pixels

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` new images: pixel probabilities of decoded z ~ N(0, I)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent, generator=generator).to(device)
        return torch.sigmoid(self.decode(z))


def kl_divergence(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per sample: ½ Σ (μ² + σ² − log σ² − 1)."""
    return 0.5 * (mu.pow(2) + log_var.exp() - log_var - 1).sum(-1)


# what registry-wide tests and `dlab list models` show an autoencoder: MNIST-sized images
EXAMPLE_META = DataMeta(
    dataset="mnist",
    task="reconstruction",
    input_shape=(1, 28, 28),
    num_classes=10,
    classes=[str(d) for d in range(10)],
    details={"dark_background": True},
)
SERVES = {"tasks": ("reconstruction",), "inputs": ("image", "vector")}


def _coder(meta: DataMeta, config, out: int, latent: int) -> nn.Module:
    if getattr(config, "backbone", "mlp") == "conv" or isinstance(config, ConvAutoencoderConfig):
        if len(meta.input_shape) != 3:
            from dlab.errors import RecipeError

            raise RecipeError(
                f"model: a convolutional backbone needs images; {meta.dataset} is not"
            )
        return ConvCoder(meta.input_shape, config.channels, out, latent)
    return DenseCoder(meta.input_shape, config.hidden, out, latent)


MODELS.register("autoencoder", config=AutoencoderConfig, summary="fully connected autoencoder (DEC's)",
                example_meta=EXAMPLE_META, **SERVES)(
    lambda cfg, meta: Autoencoder(_coder(meta, cfg, cfg.latent, cfg.latent), cfg.dropout)
)  # fmt: skip
MODELS.register("conv_autoencoder", config=ConvAutoencoderConfig, summary="convolutional autoencoder",
                example_meta=EXAMPLE_META, **SERVES)(
    lambda cfg, meta: Autoencoder(_coder(meta, cfg, cfg.latent, cfg.latent))
)  # fmt: skip
MODELS.register("vae", config=VAEConfig, summary="variational autoencoder (β-VAE), mlp or conv",
                example_meta=EXAMPLE_META, **SERVES)(
    lambda cfg, meta: VAE(_coder(meta, cfg, 2 * cfg.latent, cfg.latent), cfg.latent, cfg.beta)
)  # fmt: skip
