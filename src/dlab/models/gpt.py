"""A decoder-only GPT (Radford et al.; the nanoGPT layout): tokens in, next-token logits out.

Causal self-attention, pre-norm blocks, learned positions, output layer tied to the token
embedding, and a KV cache so that generating each new token costs one position, not the whole prefix.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn

from dlab.data.bundle import DataMeta
from dlab.models.blocks import KVCache, TransformerBlock, sample_next
from dlab.recipe import ModelConfig
from dlab.registry import MODELS

LM_META = DataMeta(
    dataset="text",
    task="language_model",
    input_kind="tokens",
    input_shape=(32,),
    num_classes=65,
    details={"vocab_size": 65, "block_size": 32},
)


class GPTConfig(ModelConfig):
    """Defaults are nanoGPT's reduced CPU configuration for Shakespeare characters."""

    layers: int = Field(4, ge=1, description="transformer blocks")
    heads: int = Field(4, ge=1, description="attention heads")
    d_model: int = Field(128, ge=8, description="embedding width (nanoGPT's n_embd)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout (0 for small data runs)")
    block_size: int | None = Field(
        None, ge=2, description="longest context; default: the data's block_size"
    )
    tie_weights: bool = Field(True, description="share the token embedding with the output layer")


class GPT(nn.Module):
    """tokens (B, T) -> logits (B, T, V) for the token after each position."""

    def __init__(self, vocab: int, block_size: int, config: GPTConfig):
        super().__init__()
        self.block_size = block_size
        d = config.d_model
        self.token = nn.Embedding(vocab, d)
        self.position = nn.Embedding(block_size, d)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d, config.heads, 4 * d, config.dropout, norm_first=True)
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        if config.tie_weights:
            self.head.weight = self.token.weight
        self.apply(self._init)
        for (
            name,
            parameter,
        ) in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("out.weight") or name.endswith("ff.3.weight"):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, tokens: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        start = caches[0].length if caches else 0
        length = tokens.shape[1]
        if start + length > self.block_size:
            from dlab.errors import InputError

            raise InputError(
                f"context of {start + length} tokens is longer than the model's block_size {self.block_size}"
            )
        positions = torch.arange(start, start + length, device=tokens.device)
        x = self.drop(self.token(tokens) + self.position(positions))  # (B, T, D)
        for i, block in enumerate(self.blocks):
            x = block(x, causal=True, cache=caches[i] if caches else None)
        return self.head(self.norm(x))  # (B, T, V)

    @torch.no_grad()
    def generate(
        self,
        tokens: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Extend (B, T) prompts by `max_new_tokens`; temperature 0 is greedy."""
        was_training = self.training
        self.eval()
        caches: list[KVCache] | None = None
        pending = tokens
        for _ in range(max_new_tokens):
            if use_cache and caches is not None and caches[0].length + 1 > self.block_size:
                caches = None  # the window is full: recompute over the last block_size tokens
            if not use_cache or caches is None:
                context = tokens[:, -self.block_size :]
                caches = [KVCache() for _ in self.blocks] if use_cache else None
                logits = self(context, caches)[:, -1]
            else:
                logits = self(pending, caches)[:, -1]
            pending = sample_next(logits, temperature, top_k, top_p, generator)[:, None]  # (B, 1)
            tokens = torch.cat([tokens, pending], dim=1)
        self.train(was_training)
        return tokens


@MODELS.register(
    "gpt",
    config=GPTConfig,
    summary="decoder-only GPT (nanoGPT layout) with KV-cache generation",
    example_meta=LM_META,
    tasks=("language_model",),
)
def build_gpt(config: GPTConfig, meta: DataMeta) -> GPT:
    return GPT(meta.details.vocab_size, config.block_size or meta.details.block_size or 256, config)
