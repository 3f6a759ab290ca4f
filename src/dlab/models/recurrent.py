"""Recurrent networks: h_t = f(W x_t + U h_{t-1} + b), as a plain RNN, an LSTM or a GRU.

One model adapts to its data:
- token sequences (text classification): embedding -> packed RNN (padding never changes the
  result) -> the last layer's final state (both directions) -> classes;
- images: each row is a time step (the seed's row-by-row MNIST LSTM);
- 1-D signals and time series: (B, T, F) -> the last output -> classes, or `horizon` forecasts;
- language models: embedding -> RNN -> logits at every step (outputs: every), with generation.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from dlab.data.bundle import DataMeta
from dlab.models.blocks import sample_next
from dlab.models.transformer import TEXT_META
from dlab.recipe import ModelConfig
from dlab.registry import MODELS
from dlab.tasks import task_of

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentConfig(ModelConfig):
    """Defaults follow the seed's LSTM: hidden 128, 2 layers."""

    cell: Literal["rnn", "lstm", "gru"] = Field("lstm", description="plain tanh RNN, LSTM or GRU")
    hidden: int = Field(128, ge=1, description="hidden state width")
    layers: int = Field(2, ge=1, description="stacked recurrent layers")
    bidirectional: bool = Field(
        False, description="also read the sequence backwards (not for language models)"
    )
    dropout: float = Field(
        0.0, ge=0, lt=1, description="dropout between stacked layers and before the output layer"
    )
    embedding: int = Field(64, ge=1, description="token embedding width (token inputs)")
    outputs: Literal["last", "every"] = Field(
        "last",
        description="last: one output per sequence; every: one per time step (language models)",
    )


class Recurrent(nn.Module):
    """A recurrent network whose input and output ends are chosen from the data's metadata."""

    def __init__(self, meta: DataMeta, config: RecurrentConfig):
        super().__init__()
        task = task_of(meta)
        self.kind, self.verbs = meta.input_kind, task.verbs
        self.every = (
            config.outputs == "every" or task.predicts_every_step or task.outputs_every_step
        )
        self.pad_id = getattr(meta.details, "pad_id", None)
        self.exporting = False  # set by dlab.export: the trace-friendly path for padded tokens
        if self.kind == "tokens":
            self.embed = nn.Embedding(
                meta.details.vocab_size, config.embedding, padding_idx=self.pad_id
            )
            features = config.embedding
        elif self.kind == "image":
            channels, _, width = meta.input_shape
            features = channels * width  # one row of every channel per step
        elif self.kind == "series":
            features = meta.input_shape[-1]
        else:  # a vector read one value per step (MNIST-1D)
            features = 1
        if task.predicts_every_step and config.bidirectional:
            from dlab.errors import RecipeError

            raise RecipeError("model.bidirectional: a language model may not read the future")
        self.rnn = CELLS[config.cell](
            features,
            config.hidden,
            num_layers=config.layers,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
            bidirectional=config.bidirectional,
        )
        directions = 2 if config.bidirectional else 1
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden * directions, task.output_size(meta))

    def _sequence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, F) inputs and the (B,) true lengths where padding exists."""
        if self.kind == "tokens":
            lengths = (x != self.pad_id).sum(1) if self.pad_id is not None else None
            return self.embed(x), lengths
        if self.kind == "image":
            batch, channels, height, width = x.shape
            return x.permute(0, 2, 1, 3).reshape(
                batch, height, channels * width
            ), None  # rows as steps
        if self.kind == "series":
            return x, None
        return x.unsqueeze(-1), None  # (B, D) -> (B, D, 1)

    def forward(
        self, x: torch.Tensor, state: tuple | torch.Tensor | None = None, return_state: bool = False
    ):
        sequence, lengths = self._sequence(x)
        if lengths is not None and not self.every and self.exporting:
            return self.head(self.drop(self._final_by_length(sequence, lengths.clamp_min(1))))
        if lengths is not None and not self.every:
            packed = pack_padded_sequence(
                sequence, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False
            )
            _, final = self.rnn(packed)
            hidden = final[0] if isinstance(final, tuple) else final  # (layers·dirs, B, H)
            if self.rnn.bidirectional:
                last = torch.cat(
                    [hidden[-2], hidden[-1]], dim=-1
                )  # forward and backward final states
            else:
                last = hidden[-1]
            return self.head(self.drop(last))  # (B, outputs)
        outputs, state = self.rnn(sequence, state)  # (B, T, H·dirs)
        if self.every:
            logits = self.head(self.drop(outputs))  # (B, T, outputs)
            return (logits, state) if return_state else logits
        if self.rnn.bidirectional:
            half = outputs.shape[-1] // 2
            last = torch.cat(
                [outputs[:, -1, :half], outputs[:, 0, half:]], dim=-1
            )  # each direction's end
        else:
            last = outputs[:, -1]
        return self.head(self.drop(last))  # (B, outputs)

    def _final_by_length(self, sequence: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The packed path's final states without packing, which torch.export cannot trace.

        Layer by layer, the forward direction reads the padded batch (outputs before a sequence's
        end never see its padding) and the backward direction reads each sequence reversed within
        its own length, so both equal the packed result; the last layer's state at the true end
        is gathered. Same weights, same numbers (a test holds the two paths equal).
        """
        rnn, batch, steps = self.rnn, sequence.shape[0], sequence.shape[1]
        positions = torch.arange(steps, device=sequence.device).expand(batch, steps)
        within = positions < lengths[:, None]
        reverse = torch.where(within, lengths[:, None] - 1 - positions, positions)  # an involution
        end = (lengths - 1)[:, None, None]

        def run(inputs: torch.Tensor, suffix: str) -> torch.Tensor:
            weights = [getattr(rnn, f"{kind}_l{suffix}") for kind in ("weight_ih", "weight_hh")]
            if rnn.bias:
                weights += [getattr(rnn, f"{kind}_l{suffix}") for kind in ("bias_ih", "bias_hh")]
            zeros = inputs.new_zeros(1, batch, rnn.hidden_size)
            if rnn.mode == "LSTM":
                return torch.lstm(
                    inputs, (zeros, zeros), weights, rnn.bias, 1, 0.0, False, False, True
                )[0]
            step = {"GRU": torch.gru, "RNN_TANH": torch.rnn_tanh, "RNN_RELU": torch.rnn_relu}[
                rnn.mode
            ]
            return step(inputs, zeros, weights, rnn.bias, 1, 0.0, False, False, True)[0]

        def flip(values: torch.Tensor) -> torch.Tensor:
            return values.gather(1, reverse[..., None].expand_as(values))

        inputs = sequence
        for layer in range(rnn.num_layers):
            forward = run(inputs, str(layer))
            if not rnn.bidirectional:
                inputs = forward
                continue
            backward = flip(run(flip(inputs), f"{layer}_reverse"))
            inputs = torch.cat([forward, backward], dim=-1)
        width = rnn.hidden_size
        last_forward = inputs[..., :width].gather(1, end.expand(-1, 1, width))[:, 0]
        if not rnn.bidirectional:
            return last_forward
        return torch.cat([last_forward, inputs[:, 0, width:]], dim=-1)

    @torch.no_grad()
    def generate(
        self,
        tokens: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue (B, T) prompts token by token, carrying the hidden state."""
        if "generate" not in self.verbs:
            from dlab.errors import InputError

            raise InputError("generate: this recurrent model is not a language model")
        was_training = self.training
        self.eval()
        logits, state = self(tokens, return_state=True)
        for _ in range(max_new_tokens):
            next_token = sample_next(logits[:, -1], temperature, top_k, top_p, generator)[:, None]
            tokens = torch.cat([tokens, next_token], dim=1)
            logits, state = self(next_token, state, return_state=True)
        self.train(was_training)
        return tokens


class GRUConfig(RecurrentConfig):
    """A GRU: update and reset gates, no separate cell state."""

    cell: Literal["rnn", "lstm", "gru"] = Field("gru", description="plain tanh RNN, LSTM or GRU")


class RNNConfig(RecurrentConfig):
    """A plain (Elman) RNN with tanh."""

    cell: Literal["rnn", "lstm", "gru"] = Field("rnn", description="plain tanh RNN, LSTM or GRU")


@MODELS.register(
    "lstm",
    config=RecurrentConfig,
    summary="LSTM for tokens, image rows, signals or series; packed sequences",
    example_meta=TEXT_META,
)
def build_lstm(config: RecurrentConfig, meta: DataMeta) -> Recurrent:
    return Recurrent(meta, config)


@MODELS.register(
    "gru",
    config=GRUConfig,
    summary="GRU (the seed's per-step GRU: outputs: every)",
    example_meta=TEXT_META,
)
def build_gru(config: GRUConfig, meta: DataMeta) -> Recurrent:
    return Recurrent(meta, config)


@MODELS.register(
    "rnn",
    config=RNNConfig,
    summary="plain tanh RNN: h_t = tanh(W x_t + U h_(t-1) + b)",
    example_meta=TEXT_META,
)
def build_rnn(config: RNNConfig, meta: DataMeta) -> Recurrent:
    return Recurrent(meta, config)
