"""Transcription: a sequence of symbols out of a signal, learned with CTC (speech recognition).

A model emits, for every frame it keeps, scores over the symbols plus a blank (index 0; symbol
i is output i + 1). Greedy decoding takes each frame's best output, merges repeats and drops
blanks: "_33__5_" reads "3 5". Evaluation reports the word error rate (each symbol a word, as
for connected digits: substitutions + deletions + insertions over the reference length), the
sentence error rate (transcripts with any error) and the CTC loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from dlab.data.audio import AudioFeatures
from dlab.registry import LOSSES
from dlab.tasks import Details, Task, register
from dlab.training.metrics import IGNORE

if TYPE_CHECKING:
    from dlab.api import Run
    from dlab.data import DataBundle
    from dlab.data.bundle import Batch, DataMeta
    from dlab.report.context import ReportContext
    from dlab.report.sections import Section

BLANK = 0


class TranscriptionDetails(Details):
    """How long a transcript may be, and how its symbols are written out."""

    max_symbols: int  # the longest target sequence
    separator: str = " "  # between symbols in a written transcript
    audio: AudioFeatures | None = None  # speech from WAV: how a clip becomes frames


def greedy(outputs: torch.Tensor) -> list[list[int]]:
    """Best path decoding of (B, T, C) frame scores: symbol indices (0-based) per input."""
    best = outputs.argmax(-1)
    decoded = []
    for row in best.tolist():
        symbols, previous = [], BLANK
        for frame in row:
            if frame != previous and frame != BLANK:
                symbols.append(frame - 1)
            previous = frame
        decoded.append(symbols)
    return decoded


def error_rates(predicted: list[list[int]], reference: list[list[int]]) -> dict[str, float]:
    """Word error rate (each symbol a word) and sentence error rate, via torchmetrics."""
    from torchmetrics.text import WordErrorRate

    def text(symbols: list[int]) -> str:
        return " ".join(str(s) for s in symbols)

    wer = WordErrorRate()(list(map(text, predicted)), list(map(text, reference)))
    wrong = sum(p != r for p, r in zip(predicted, reference, strict=True))
    return {"wer": float(wer), "ser": wrong / max(len(reference), 1)}


@register
class Transcription(Task):
    """Symbol sequences from signals (CTC speech recognition): word and sentence error rates."""

    name = "transcription"
    Details = TranscriptionDetails
    headline = ("wer", "ser", "loss")
    verbs = ("predict",)
    outputs_every_step = True

    def evaluate(self, run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
        loss_fn, model = LOSSES.build(run.recipe.train.loss), run.model.eval()
        predicted, reference, total = [], [], 0.0
        with torch.no_grad():  # one pass: the loss and the transcripts from the same outputs
            for inputs, targets in bundle.loader(split).epoch(0):
                outputs = model(inputs)
                total += float(loss_fn(outputs, targets)) * len(targets)
                predicted += greedy(outputs)
                reference += [[t - 1 for t in row if t != IGNORE] for row in targets.tolist()]
        report = {"loss": total / max(len(reference), 1)}
        classes = bundle.meta.classes or []
        examples = [
            {
                "reference": self._written(r, classes, bundle.meta),
                "transcript": self._written(p, classes, bundle.meta),
            }
            for p, r in list(zip(predicted, reference, strict=True))[:8]
        ]
        return {
            **error_rates(predicted, reference),
            **report,
            "samples": len(reference),
            "examples": examples,
        }

    def output_size(self, meta: DataMeta) -> int:
        return len(meta.classes or []) + 1  # the symbols and the blank

    def example_batch(self, meta: DataMeta, batch: int, generator: torch.Generator) -> Batch:
        inputs = torch.randn(batch, *meta.input_shape, generator=generator)
        size = meta.details.max_symbols
        targets = torch.randint(1, len(meta.classes or []) + 1, (batch, size), generator=generator)
        targets[batch // 2 :, size // 2 :] = IGNORE  # half the transcripts are shorter
        return inputs, targets

    def answer(self, outputs: torch.Tensor, meta: DataMeta, top_k: int = 5) -> list[dict[str, Any]]:
        """The greedy transcript of each input, written out and as symbols."""
        classes = meta.classes or []
        return [
            {
                "label": self._written(symbols, classes, meta),
                "symbols": [classes[s] for s in symbols],
            }
            for symbols in greedy(outputs)
        ]

    def report_sections(self) -> list[Section]:
        from dlab.report.sections import Section

        return [Section("transcripts", "Transcripts", 40, transcripts)]

    @staticmethod
    def _written(symbols: list[int], classes: list[str], meta: DataMeta) -> str:
        return meta.details.separator.join(classes[s] for s in symbols)


def transcripts(ctx: ReportContext) -> str | None:
    """Error rates, and test transcripts beside their references (errors marked)."""
    from dlab.report.html import escape, note, table

    report = ctx.evaluation.get(ctx.split, {})
    if "wer" not in report:
        return note("no transcripts yet: run `dlab evaluate RUN`")
    rows = [
        [e["reference"], e["transcript"], "" if e["reference"] == e["transcript"] else "✗"]
        for e in report.get("examples", [])
    ]
    return (
        f"<p>Word error rate {report['wer']:.2%}, sentence error rate {report['ser']:.2%} on "
        f"the {escape(ctx.split)} split ({report.get('samples', '?')} utterances), greedy "
        "CTC decoding.</p>" + table(rows, ["reference", "transcript", ""]) + _alignments(ctx)
    )


def _alignments(ctx: ReportContext) -> str:
    """Three test utterances with the symbol each output frame emits written above them."""
    from dlab.report import plots
    from dlab.report.html import figure

    inputs, _ = next(iter(ctx.bundle.loader(ctx.split).epoch(0)))
    with torch.no_grad():
        paths = ctx.model(inputs[:3]).argmax(-1).tolist()
    classes = ctx.data_meta.classes or []
    return "<h3>Alignments: where each symbol is heard</h3>" + figure(
        plots.alignment_figure(list(inputs[:3]), paths, classes), "CTC alignments"
    )
