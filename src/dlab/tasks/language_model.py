"""Language modelling: predict the next token; sample text from a prompt.

Evaluation reports loss, perplexity and token accuracy (padding scores nothing), and a sample.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from dlab.registry import LOSSES
from dlab.tasks import Task, register
from dlab.training.metrics import build_metrics, evaluate

if TYPE_CHECKING:
    from dlab.api import Run
    from dlab.data import DataBundle


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


@register
class LanguageModel(Task):
    """Next-token prediction: perplexity, token accuracy and generated text."""

    name = "language_model"
    headline = ("perplexity", "loss", "accuracy")
    fit_metrics = ("accuracy",)
    scores_accuracy = True
    padded_targets = True
    verbs = ("generate",)

    def evaluate(self, run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
        report = token_report(run, bundle, split)
        report["sample"] = run.generate(None, max_new_tokens=300, temperature=0.8, seed=0)
        return report
