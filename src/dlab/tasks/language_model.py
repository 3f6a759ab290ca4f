"""Language modelling: predict the next token; sample text from a prompt.

Evaluation reports loss, perplexity and token accuracy (padding scores nothing), and a sample.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from dlab.registry import LOSSES
from dlab.tasks import Task, Tokens, register
from dlab.training.metrics import build_metrics, evaluate

if TYPE_CHECKING:
    from dlab.api import Run
    from dlab.data import DataBundle
    from dlab.data.bundle import Batch, DataMeta
    from dlab.report.context import ReportContext
    from dlab.report.sections import Section


def token_report(run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
    """Loss, perplexity and token accuracy of a token-predicting model on `split`."""
    loader = bundle.loader(split)
    report = evaluate(
        run.model,
        loader,
        LOSSES.build(run.recipe.train.loss),
        build_metrics(["accuracy", "perplexity"], bundle.meta),
        torch.device("cpu"),
    )
    report["samples"] = loader.num_samples
    return report


class LanguageModelDetails(Tokens):
    """A stream of tokens cut into blocks."""

    block_size: int | None = None  # the context the data was cut to
    characters: int | None = None  # the length of the raw text


@register
class LanguageModel(Task):
    """Next-token prediction: perplexity, token accuracy and generated text."""

    name = "language_model"
    Details = LanguageModelDetails
    headline = ("perplexity", "loss", "accuracy")
    fit_metrics = ("accuracy",)
    scores_accuracy = True
    padded_targets = True
    padded_inputs = False  # a stream of text: every id, 0 included, is a symbol
    predicts_every_step = True
    hf_auto_class = "AutoModelForCausalLM"
    verbs = ("generate",)

    def evaluate(self, run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
        report = token_report(run, bundle, split)
        report["sample"] = run.generate(None, max_new_tokens=300, temperature=0.8, seed=0)
        return report

    def output_size(self, meta: DataMeta) -> int:
        return meta.details.vocab_size

    def example_batch(self, meta: DataMeta, batch: int, generator: torch.Generator) -> Batch:
        length = meta.input_shape[0]
        shape = (batch, length + 1)
        tokens = torch.randint(0, meta.details.vocab_size, shape, generator=generator)
        return tokens[:, :-1], tokens[:, 1:]  # the target is the input shifted by one

    def report_sections(self) -> list[Section]:
        from dlab.report.sections import Section

        return [Section("samples", "Generated text", 40, generated_text)]


def generated_text(ctx: ReportContext) -> str | None:
    """Validation perplexity and text sampled with and without a prompt."""
    from dlab.report.html import escape

    report = ctx.evaluation.get("val", {})
    parts = []
    if "loss" in report:
        parts.append(
            f"<p>validation loss {report['loss']:.4f} (perplexity {report.get('perplexity', float('nan')):.2f})</p>"
        )
    known = getattr(
        ctx.run.tokenizer, "index", None
    )  # a character vocabulary, or None for subwords
    prompts = [
        None,
        *[p for p in ("ROMEO:", "The ") if known is None or all(c in known for c in p)][:1],
    ]
    for prompt in prompts:
        text = ctx.run.generate(prompt, max_new_tokens=250, temperature=0.8, seed=0)
        label = "no prompt" if prompt is None else f"prompt {prompt!r}"
        parts.append(
            f"<h3>{escape(label)}, temperature 0.8</h3><pre>{escape((prompt or '') + text)}</pre>"
        )
    return "".join(parts)
