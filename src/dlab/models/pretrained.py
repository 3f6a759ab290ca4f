"""Hugging Face models from local files, fine-tuned by dlab's own trainer, fully or with LoRA (peft).

The task follows the data: text classification loads a sequence-classification head, a language
model a causal LM, sentence pairs a seq2seq LM (T5). The data must use the same model's tokenizer:
`data.tokenizer: {kind: pretrained, path: <same as model.path>}`. With LoRA, only the adapters
and the new head are trained and saved, so a checkpoint is megabytes, not the whole model.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from dlab.data.bundle import DataMeta
from dlab.errors import RecipeError
from dlab.extras import require
from dlab.models.blocks import sample_next
from dlab.models.hub import offline, resolve
from dlab.recipe import ModelConfig, Section
from dlab.registry import MODELS
from dlab.tasks import Task, task_of

# attention projections LoRA adapts by default, per architecture
LORA_TARGETS = {
    "bert": ["query", "value"],
    "llama": ["q_proj", "v_proj"],
    "t5": ["q", "v"],
    "gpt2": ["c_attn"],
    "mistral": ["q_proj", "v_proj"],
}
HEADS = {"bert": ["classifier"], "llama": ["score"], "t5": ["classification_head"]}


class LoraSettings(Section):
    """Low-rank adapters (Hu et al.): W + (α/r)·B·A with A, B of rank r; W stays frozen."""

    r: int = Field(8, ge=1, description="rank of the adapters")
    alpha: int = Field(16, ge=1, description="scale α (the update is multiplied by α/r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapters' input")
    targets: list[str] | None = Field(
        None, description="module names to adapt; default: the attention's query and value"
    )


class PretrainedConfig(ModelConfig):
    """A pretrained Hugging Face model on this machine."""

    path: str = Field(description="minilm, smollm2, a model folder, or a .gguf file")
    lora: LoraSettings | None = Field(
        None, description="train low-rank adapters only (None: fine-tune everything)"
    )


def _kv_cache(out: Any) -> dict[str, Any]:
    """The KV cache of a forward pass, as the keyword the next one takes: `cache` from
    transformers 5.2x on (where `past_key_values` is deprecated), `past_key_values` before."""
    if "cache" in out:
        return {"cache": out["cache"]}
    return {"past_key_values": out.past_key_values}


class Pretrained(nn.Module):
    """dlab's batch conventions around a transformers model."""

    def __init__(self, model: nn.Module, task: Task, pad_id: int, lora: bool):
        super().__init__()
        self.hf, self.pad_id = model, pad_id
        self.pairs, self.masks_padding = len(task.input_names) == 2, task.padded_inputs
        self.saves_trainable_only = lora  # checkpoints hold adapters + head, not the frozen base

    def forward(self, tokens: torch.Tensor, target_in: torch.Tensor | None = None) -> torch.Tensor:
        if self.pairs:  # seq2seq: the source and the target shifted right
            return self.hf(
                input_ids=tokens, attention_mask=tokens != self.pad_id, decoder_input_ids=target_in
            ).logits
        if not self.masks_padding:  # a language model's text stream has no padding
            return self.hf(input_ids=tokens).logits  # (B, T, V)
        return self.hf(input_ids=tokens, attention_mask=tokens != self.pad_id).logits  # (B, C)

    @torch.no_grad()
    def generate(
        self, tokens, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None
    ) -> torch.Tensor:
        """Sample a continuation with the model's own KV cache."""
        was_training = self.training
        self.eval()
        out = self.hf(input_ids=tokens, use_cache=True)
        for _ in range(max_new_tokens):
            next_token = sample_next(out.logits[:, -1], temperature, top_k, top_p, generator)[
                :, None
            ]
            tokens = torch.cat([tokens, next_token], dim=1)
            out = self.hf(input_ids=next_token, use_cache=True, **_kv_cache(out))
        self.train(was_training)
        return tokens

    @torch.no_grad()
    def beam_search(
        self, source: torch.Tensor, beam: int = 4, max_new: int | None = None
    ) -> list[list[int]]:
        """Translations by the model's own beam search (seq2seq models)."""
        out = self.hf.generate(
            input_ids=source,
            attention_mask=source != self.pad_id,
            num_beams=beam,
            max_new_tokens=max_new or 64,
        )
        return [[i for i in row.tolist() if i != self.pad_id] for row in out]

    def greedy(self, source: torch.Tensor, max_new: int | None = None) -> list[list[int]]:
        return self.beam_search(source, beam=1, max_new=max_new)


@MODELS.register(
    "pretrained",
    config=PretrainedConfig,
    summary="a local Hugging Face model (MiniLM, SmolLM2, T5, ...), fully or LoRA fine-tuned",
    needs_path=True,
    tasks=("classification", "language_model", "seq2seq"),
)
def build_pretrained(config: PretrainedConfig, meta: DataMeta) -> Pretrained:
    offline()
    require("pretrained", "model.name: pretrained", ("transformers", "peft"), RecipeError)
    import transformers

    local = resolve(config.path)
    kwargs = local.kwargs()
    transformers.logging.set_verbosity_error()
    task = task_of(meta)
    if task.labels_inputs:
        kwargs["num_labels"] = meta.num_classes
    model = getattr(transformers, task.hf_auto_class).from_pretrained(local.folder, **kwargs)
    model_type = model.config.model_type
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = getattr(meta.details, "pad_id", None) or 0
    if config.lora is not None:
        from peft import LoraConfig, get_peft_model

        targets = config.lora.targets or LORA_TARGETS.get(model_type)
        if targets is None:
            raise RecipeError(
                f"model.lora.targets: no default for a {model_type} model; name its attention projections"
            )
        adapter = LoraConfig(
            r=config.lora.r,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            target_modules=targets,
            modules_to_save=HEADS.get(model_type) if task.labels_inputs else None,
        )
        model = get_peft_model(model, adapter)
    return Pretrained(
        model,
        task,
        int(_pad_id(meta, model.config.pad_token_id or 0)),
        config.lora is not None,
    )


def _pad_id(meta: DataMeta, default: int) -> int:
    """The data's padding id, or the model's when the data never pads."""
    pad = getattr(meta.details, "pad_id", None)
    return default if pad is None else pad
