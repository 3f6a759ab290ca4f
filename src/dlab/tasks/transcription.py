"""Transcription: a sequence of symbols out of a signal, learned with CTC (speech recognition).

A model emits, for every frame it keeps, scores over the symbols plus a blank (index 0; symbol
i is output i + 1). Greedy decoding takes each frame's best output, merges repeats and drops
blanks: "_33__5_" reads "3 5"; prefix beam search sums every alignment of each candidate
transcript instead. Evaluation reports the word error rate (each symbol a word, as for
connected digits: substitutions + deletions + insertions over the reference length), the
character error rate, the sentence error rate (transcripts with any error), the word and
sentence error rates of beam search, and the CTC loss.
"""

from __future__ import annotations

import math
from functools import partial
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


def beam_search(outputs: torch.Tensor, width: int = 8, floor: float = -12.0) -> list[list[int]]:
    """CTC prefix beam search over (B, T, C) frame scores: for each input the symbol sequence
    (0-based) whose probability, summed over every alignment that collapses to it, is highest
    among `width` prefixes kept per frame (Hannun et al. 2014). Outputs with log-probability
    below `floor` at a frame are not extended there (they cannot win; it keeps this fast)."""
    log_probs = outputs.float().log_softmax(-1).cpu()
    return [_beam_one(row, width, floor) for row in log_probs]


def _beam_one(log_probs: torch.Tensor, width: int, floor: float) -> list[int]:
    never = float("-inf")
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, never)}  # (blank, non-blank)
    for frame in log_probs.tolist():
        grown: dict[tuple[int, ...], list[float]] = {}
        add = partial(_grow, grown)
        candidates = [c for c, p in enumerate(frame) if p > floor or c == BLANK]
        for prefix, (pb, pnb) in beams.items():
            total = _logadd(pb, pnb)
            for c in candidates:
                p = frame[c]
                if c == BLANK:
                    add(prefix, blank=total + p)
                elif prefix and prefix[-1] == c:  # a repeat: merges unless a blank came between
                    add(prefix, symbol=pnb + p)
                    add((*prefix, c), symbol=pb + p)
                else:
                    add((*prefix, c), symbol=total + p)
        ranked = sorted(grown.items(), key=lambda kv: -_logadd(*kv[1]))[:width]
        beams = {prefix: (pb, pnb) for prefix, (pb, pnb) in ranked}
    best = max(beams.items(), key=lambda kv: _logadd(*kv[1]))[0]
    return [c - 1 for c in best]


def _grow(
    grown: dict, prefix: tuple[int, ...], blank: float = -math.inf, symbol: float = -math.inf
) -> None:
    """Add probability (log) to `prefix` ending in a blank or in its last symbol."""
    old = grown.setdefault(prefix, [-math.inf, -math.inf])
    old[0], old[1] = _logadd(old[0], blank), _logadd(old[1], symbol)


def _logadd(a: float, b: float) -> float:
    if a == float("-inf"):
        return b
    if b == float("-inf"):
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def error_rates(predicted: list[list[int]], reference: list[list[int]]) -> dict[str, float]:
    """Word error rate (each symbol a word), character error rate (over the symbols written
    without separators) and sentence error rate, via torchmetrics."""
    from torchmetrics.text import CharErrorRate, WordErrorRate

    def text(symbols: list[int], sep: str = " ") -> str:
        return sep.join(str(s) for s in symbols)

    wer = WordErrorRate()(list(map(text, predicted)), list(map(text, reference)))
    cer = CharErrorRate()([text(p, "") for p in predicted], [text(r, "") for r in reference])
    wrong = sum(p != r for p, r in zip(predicted, reference, strict=True))
    return {"wer": float(wer), "cer": float(cer), "ser": wrong / max(len(reference), 1)}


@register
class Transcription(Task):
    """Symbol sequences from signals (CTC speech recognition): word and sentence error rates."""

    name = "transcription"
    Details = TranscriptionDetails
    headline = ("wer", "cer", "ser", "beam_wer", "loss")
    verbs = ("predict",)
    outputs_every_step = True

    def evaluate(self, run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
        loss_fn, model = LOSSES.build(run.recipe.train.loss), run.model.eval()
        predicted, beamed, reference, total = [], [], [], 0.0
        with torch.no_grad():  # one pass: the loss and the transcripts from the same outputs
            for inputs, targets in bundle.loader(split).epoch(0):
                outputs = model(inputs)
                total += float(loss_fn(outputs, targets)) * len(targets)
                predicted += greedy(outputs)
                beamed += beam_search(outputs)
                reference += [[t - 1 for t in row if t != IGNORE] for row in targets.tolist()]
        beam = error_rates(beamed, reference)
        report = {"loss": total / max(len(reference), 1), "beam_wer": beam["wer"]}
        report["beam_ser"] = beam["ser"]
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
