"""Sequence to sequence: translate a source sentence into a target sentence.

Evaluation reports the token loss, perplexity and accuracy, and corpus BLEU (sacrebleu, the
reference implementation) of beam-search translations against the split's reference sentences.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from dlab.errors import DataError
from dlab.tasks import Task, Tokens, register
from dlab.tasks.language_model import token_report

if TYPE_CHECKING:
    from dlab.api import Run
    from dlab.data import DataBundle
    from dlab.data.bundle import Batch, DataMeta
    from dlab.report.context import ReportContext
    from dlab.report.sections import Section


def translation_report(
    run: Run, bundle: DataBundle, split: str, beam: int = 4, batch: int = 64
) -> dict[str, Any]:
    """Corpus BLEU of beam-search translations against the split's reference sentences."""
    import sacrebleu

    texts = bundle.extra.get("texts", {}).get(split)
    if texts is None:
        raise DataError(f"{bundle.meta.dataset}: no reference texts for '{split}'")
    sources, references = texts
    hypotheses: list[str] = []
    for start in range(0, len(sources), batch):
        hypotheses += run.translate(sources[start : start + batch], beam=beam)
    metric = sacrebleu.BLEU()
    bleu = metric.corpus_score(hypotheses, [references])
    return {
        "bleu": bleu.score,
        "bleu_signature": str(metric.get_signature()),
        "beam": beam,
        "examples": [
            {"source": s, "reference": r, "translation": h}
            for s, r, h in list(zip(sources, references, hypotheses, strict=True))[:5]
        ],
    }


class Seq2SeqDetails(Tokens):
    """Source and target sentences in one vocabulary, framed by begin/end ids."""

    bos_id: int | None = None
    eos_id: int | None = None
    source: str | None = None  # the languages, e.g. en -> fr
    target: str | None = None


@register
class Seq2Seq(Task):
    """Sentence pairs (translation): BLEU of beam-search output, perplexity and token accuracy."""

    name = "seq2seq"
    Details = Seq2SeqDetails
    headline = ("bleu", "perplexity", "loss", "accuracy")
    fit_metrics = ("accuracy",)
    scores_accuracy = True
    padded_targets = True
    verbs = ("translate",)
    input_names = ("source", "target_in")  # teacher forcing: the target shifted right
    hf_auto_class = "AutoModelForSeq2SeqLM"

    def evaluate(self, run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
        return {**token_report(run, bundle, split), **translation_report(run, bundle, split)}

    def output_size(self, meta: DataMeta) -> int:
        return meta.details.vocab_size

    def example_batch(self, meta: DataMeta, batch: int, generator: torch.Generator) -> Batch:
        details, length = meta.details, meta.input_shape[0]
        source = torch.randint(4, details.vocab_size, (batch, length), generator=generator)
        target = torch.randint(4, details.vocab_size, (batch, length), generator=generator)
        source[batch // 2 :, length // 2 :] = details.pad_id  # half the sources are padded
        target_in = torch.cat([torch.full((batch, 1), details.bos_id), target[:, :-1]], dim=1)
        return (source, target_in), target

    def report_sections(self) -> list[Section]:
        from dlab.report.sections import Section

        return [Section("translations", "Translations", 40, translations)]


def translations(ctx: ReportContext) -> str | None:
    """BLEU and example translations beside their references."""
    from dlab.report.html import escape, note, table

    report = ctx.evaluation.get(ctx.split, {})
    if "bleu" not in report:
        return note("no BLEU yet: run `dlab evaluate RUN`")
    rows = [[e["source"], e["translation"], e["reference"]] for e in report.get("examples", [])]
    return (
        f'<p>BLEU {report["bleu"]:.2f} on the {escape(ctx.split)} split, beam {report.get("beam", "?")} <span class="note">({escape(report.get("bleu_signature", ""))})</span></p>'
        + table(rows, ["source", "translation", "reference"])
    )
