"""Transformers for text: an encoder classifier and an encoder-decoder for translation.

The seed tutorial calls nn.Transformer with its positional arguments in the wrong order and an
undefined src_mask; here every mask is built from the data: padding from `tokens != pad_id`,
causality for the decoder. Embeddings are scaled by √d_model before the positional encoding is
added (Vaswani et al. 2017, section 3.4).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from dlab.data.bundle import DataMeta
from dlab.models.blocks import KVCache, TransformerBlock, positional_encoding
from dlab.recipe import ModelConfig
from dlab.registry import MODELS

TEXT_META = DataMeta(
    dataset="text",
    input_kind="tokens",
    input_shape=(32,),
    num_classes=2,
    classes=["neg", "pos"],
    details={"vocab_size": 100, "pad_id": 0, "max_length": 32},
)
PAIRS_META = DataMeta(
    dataset="pairs",
    task="seq2seq",
    input_kind="tokens",
    input_shape=(24,),
    num_classes=60,
    details={"vocab_size": 60, "pad_id": 0, "bos_id": 2, "eos_id": 3, "max_length": 24},
)


class TransformerClassifierConfig(ModelConfig):
    """An encoder over token embeddings, pooled, then a linear classifier."""

    d_model: int = Field(128, ge=8, description="width of every token representation")
    heads: int = Field(4, ge=1, description="attention heads (d_model must divide evenly)")
    layers: int = Field(2, ge=1, description="encoder blocks")
    ff: int = Field(256, ge=8, description="hidden width of each feed-forward layer")
    dropout: float = Field(
        0.1, ge=0, lt=1, description="dropout in attention, feed-forward and embeddings"
    )
    positional: Literal["sinusoidal", "learned"] = Field(
        "sinusoidal", description="how positions are encoded"
    )
    norm_first: bool = Field(True, description="pre-norm (True) or the original post-norm (False)")
    pooling: Literal["mean", "first"] = Field(
        "mean", description="mean of non-padding tokens, or the first token"
    )


class TransformerClassifier(nn.Module):
    """tokens (B, T) -> class logits (B, C); or frames (B, T, F) of a series (speech features),
    projected linearly instead of embedded, all-zero frames being padding."""

    def __init__(
        self,
        vocab: int,
        classes: int,
        max_len: int,
        pad_id: int,
        config: TransformerClassifierConfig,
        features: int | None = None,
    ):
        super().__init__()
        self.pad_id, self.pooling, self.scale = pad_id, config.pooling, math.sqrt(config.d_model)
        self.frames = features is not None
        if self.frames:
            self.embed: nn.Module = nn.Linear(features, config.d_model)
            self.scale = 1.0
        else:
            self.embed = nn.Embedding(vocab, config.d_model, padding_idx=pad_id)
            nn.init.normal_(
                self.embed.weight, std=config.d_model**-0.5
            )  # unit variance once scaled by √d
            nn.init.zeros_(self.embed.weight[pad_id])
        self.position = positional_encoding(config.positional, config.d_model, max_len)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                config.d_model, config.heads, config.ff, config.dropout, config.norm_first
            )
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.d_model) if config.norm_first else nn.Identity()
        self.head = nn.Linear(config.d_model, classes)

    def encode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Contextual token vectors (B, T, D) and the padding mask (B, T)."""
        padding = (tokens == 0).all(-1) if self.frames else tokens == self.pad_id
        x = self.drop(self.position(self.embed(tokens) * self.scale))
        for block in self.blocks:
            x = block(x, padding=padding)
        return self.norm(x), padding

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x, padding = self.encode(tokens)  # (B, T, D)
        if self.pooling == "first":
            return self.head(x[:, 0])
        keep = (~padding).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        return self.head((x * keep).sum(1) / keep.sum(1).clamp_min(1))  # (B, C)


@MODELS.register(
    "transformer_classifier",
    config=TransformerClassifierConfig,
    summary="Transformer encoder over tokens or frames, mean-pooled (text, speech)",
    example_meta=TEXT_META,
    tasks=("classification",),
    inputs=("tokens", "series"),
)
def build_transformer_classifier(
    config: TransformerClassifierConfig, meta: DataMeta
) -> TransformerClassifier:
    details = meta.details
    if meta.input_kind == "series":  # (frames, features): projected, not embedded
        frames, features = meta.input_shape
        return TransformerClassifier(0, meta.num_classes, frames, 0, config, features=features)
    return TransformerClassifier(
        details.vocab_size,
        meta.num_classes,
        details.max_length or 512,
        details.pad_id if details.pad_id is not None else 0,
        config,
    )


class Seq2SeqConfig(ModelConfig):
    """Encoder-decoder Transformer (Vaswani et al.) with one shared vocabulary."""

    d_model: int = Field(256, ge=8, description="width of every token representation")
    heads: int = Field(8, ge=1, description="attention heads")
    encoder_layers: int = Field(3, ge=1, description="encoder blocks")
    decoder_layers: int = Field(3, ge=1, description="decoder blocks")
    ff: int = Field(512, ge=8, description="hidden width of each feed-forward layer")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout")
    positional: Literal["sinusoidal", "learned"] = Field(
        "sinusoidal", description="how positions are encoded"
    )
    norm_first: bool = Field(True, description="pre-norm (True) or post-norm (False)")
    tie_embeddings: bool = Field(True, description="share source, target and output embeddings")


class Seq2SeqTransformer(nn.Module):
    """(source (B, S), target_in (B, T)) -> next-token logits (B, T, V), trained with teacher forcing."""

    def __init__(
        self, vocab: int, max_len: int, pad_id: int, bos_id: int, eos_id: int, config: Seq2SeqConfig
    ):
        super().__init__()
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.max_len, self.scale = max_len, math.sqrt(config.d_model)
        d = config.d_model
        self.source_embed = nn.Embedding(vocab, d, padding_idx=pad_id)
        self.target_embed = (
            self.source_embed
            if config.tie_embeddings
            else nn.Embedding(vocab, d, padding_idx=pad_id)
        )
        self.position = positional_encoding(config.positional, d, max_len + 1)
        self.drop = nn.Dropout(config.dropout)
        self.encoder = nn.ModuleList(
            TransformerBlock(d, config.heads, config.ff, config.dropout, config.norm_first)
            for _ in range(config.encoder_layers)
        )
        self.decoder = nn.ModuleList(
            TransformerBlock(
                d, config.heads, config.ff, config.dropout, config.norm_first, cross=True
            )
            for _ in range(config.decoder_layers)
        )
        self.encoder_norm = nn.LayerNorm(d) if config.norm_first else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d) if config.norm_first else nn.Identity()
        self.output = nn.Linear(d, vocab, bias=False)
        for embedding in {
            self.source_embed,
            self.target_embed,
        }:  # std d^-1/2: unit variance once scaled by √d
            nn.init.normal_(embedding.weight, std=d**-0.5)
            nn.init.zeros_(embedding.weight[pad_id])
        if config.tie_embeddings:
            self.output.weight = self.target_embed.weight

    def encode(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states (B, S, D) and the source padding mask (B, S)."""
        padding = source == self.pad_id
        x = self.drop(self.position(self.source_embed(source) * self.scale))
        for block in self.encoder:
            x = block(x, padding=padding)
        return self.encoder_norm(x), padding

    def decode(
        self, target: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B, T, V) for each target prefix position, attending causally and to the source."""
        padding = target == self.pad_id
        x = self.drop(self.position(self.target_embed(target) * self.scale))
        for block in self.decoder:
            x = block(x, padding=padding, causal=True, memory=memory, memory_padding=memory_padding)
        return self.output(self.decoder_norm(x))

    def forward(self, source: torch.Tensor, target_in: torch.Tensor) -> torch.Tensor:
        memory, memory_padding = self.encode(source)
        return self.decode(target_in, memory, memory_padding)

    def _strip(self, ids: list[int]) -> list[int]:
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return [i for i in ids if i not in (self.pad_id, self.bos_id)]

    def _caches(self) -> list[tuple[KVCache, KVCache]]:
        return [(KVCache(), KVCache()) for _ in self.decoder]

    def _step(
        self, token: torch.Tensor, memory, memory_padding, caches, position: int
    ) -> torch.Tensor:
        """Log-probabilities (N, V) of the token after `token` (N, 1), reusing the caches."""
        x = self.drop(self.position(self.target_embed(token) * self.scale, start=position))
        for block, (self_cache, cross_cache) in zip(self.decoder, caches, strict=True):
            x = block(
                x,
                causal=True,
                memory=memory,
                memory_padding=memory_padding,
                cache=self_cache,
                cross_cache=cross_cache,
            )
        return self.output(self.decoder_norm(x))[:, -1].float().log_softmax(-1)

    def _budget(self, source: torch.Tensor, max_new: int | None) -> int:
        """Decoding length: twice the longest source plus 10, within the model's positions."""
        longest = int((source != self.pad_id).sum(1).max())
        return min(max_new or 2 * longest + 10, self.max_len)

    @torch.no_grad()
    def greedy(self, source: torch.Tensor, max_new: int | None = None) -> list[list[int]]:
        """The most likely next token at every step, until <eos> (ids without <bos>/<eos>)."""
        was_training = self.training
        self.eval()
        memory, memory_padding = self.encode(source)
        caches = self._caches()
        token = torch.full(
            (source.shape[0], 1), self.bos_id, dtype=torch.long, device=source.device
        )
        output, done = [], torch.zeros(source.shape[0], dtype=torch.bool, device=source.device)
        for position in range(self._budget(source, max_new)):
            token = self._step(token, memory, memory_padding, caches, position).argmax(
                -1, keepdim=True
            )
            token = token.masked_fill(done[:, None], self.pad_id)
            output.append(token)
            done |= token[:, 0] == self.eos_id
            if bool(done.all()):
                break
        self.train(was_training)
        return [self._strip(row) for row in torch.cat(output, dim=1).tolist()]

    @torch.no_grad()
    def beam_search(
        self,
        source: torch.Tensor,
        beam: int = 4,
        max_new: int | None = None,
        length_penalty: float = 0.6,
    ) -> list[list[int]]:
        """Keep the `beam` best prefixes per sentence; score = log-probability / length^penalty (GNMT)."""
        was_training = self.training
        self.eval()
        batch, device = source.shape[0], source.device
        memory, memory_padding = self.encode(source)
        memory = memory.repeat_interleave(beam, 0)  # (B·k, S, D)
        memory_padding = memory_padding.repeat_interleave(beam, 0)
        caches = self._caches()
        prefixes = torch.full((batch * beam, 1), self.bos_id, dtype=torch.long, device=device)
        scores = torch.zeros(batch, beam, device=device)
        scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
        finished = torch.zeros(batch * beam, dtype=torch.bool, device=device)
        offsets = torch.arange(batch, device=device)[:, None] * beam
        for position in range(self._budget(source, max_new)):
            log_probs = self._step(
                prefixes[:, -1:], memory, memory_padding, caches, position
            )  # (B·k, V)
            log_probs[finished] = float("-inf")
            log_probs[finished, self.pad_id] = (
                0.0  # a finished beam only extends with padding, at no cost
            )
            vocab = log_probs.shape[-1]
            candidates = (scores.view(-1, 1) + log_probs).view(batch, beam * vocab)
            scores, chosen = candidates.topk(beam, dim=-1)  # (B, k)
            origin = ((chosen // vocab) + offsets).view(-1)
            tokens = (chosen % vocab).view(-1, 1)
            prefixes = torch.cat([prefixes[origin], tokens], dim=1)
            finished = finished[origin] | (tokens.view(-1) == self.eos_id)
            for self_cache, _ in caches:
                self_cache.reorder(origin)
            if bool(finished.all()):
                break
        lengths = (
            ((prefixes != self.pad_id) & (prefixes != self.bos_id))
            .sum(1)
            .clamp_min(1)
            .view(batch, beam)
            .float()
        )
        best = (scores / lengths.pow(length_penalty)).argmax(-1)
        results = [self._strip(prefixes[b * beam + int(best[b])].tolist()) for b in range(batch)]
        self.train(was_training)
        return results


@MODELS.register(
    "seq2seq_transformer",
    config=Seq2SeqConfig,
    summary="Transformer encoder-decoder for translation; greedy and beam-search decoding",
    example_meta=PAIRS_META,
    tasks=("seq2seq",),
)
def build_seq2seq(config: Seq2SeqConfig, meta: DataMeta) -> Seq2SeqTransformer:
    d = meta.details
    return Seq2SeqTransformer(
        d.vocab_size, d.max_length or 128, d.pad_id, d.bos_id, d.eos_id, config
    )
