"""Classification: one label per input (images, vectors, texts, series).

Evaluation reports accuracy, macro and per-class precision/recall/F1 and the confusion matrix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from dlab.data.audio import AudioFeatures
from dlab.tasks import Details, Task, register
from dlab.training.metrics import classification_report, predict_all

if TYPE_CHECKING:
    from dlab.api import Run
    from dlab.data import DataBundle
    from dlab.data.bundle import Batch, DataMeta
    from dlab.report.sections import Section


class ClassificationDetails(Details):
    """Images: how the training digits were drawn; texts: their token ids."""

    dark_background: bool | None = None  # single-channel images: light strokes on dark
    vocab_size: int | None = None
    pad_id: int | None = None
    max_length: int | None = None
    tokenizer: str | None = None
    audio: AudioFeatures | None = None  # sounds: how a WAV clip becomes feature frames


@register
class Classification(Task):
    """One label per input: accuracy, per-class F1 and a confusion matrix."""

    name = "classification"
    Details = ClassificationDetails
    headline = ("accuracy", "macro_f1", "loss")
    fit_metrics = ("accuracy",)
    scores_accuracy = True
    verbs = ("predict",)
    labels_inputs = True
    hf_auto_class = "AutoModelForSequenceClassification"

    def evaluate(self, run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
        probs, targets = predict_all(run.model, bundle.loader(split), torch.device("cpu"))
        classes = bundle.meta.classes or [str(i) for i in range(probs.shape[1])]
        return classification_report(probs, targets, classes)

    def output_size(self, meta: DataMeta) -> int:
        return meta.num_classes or 1

    def example_batch(self, meta: DataMeta, batch: int, generator: torch.Generator) -> Batch:
        if meta.input_kind == "tokens":
            details, length = meta.details, meta.input_shape[0]
            pad = details.pad_id
            low = 4 if pad is not None else 0  # keep clear of the special ids
            inputs = torch.randint(low, details.vocab_size, (batch, length), generator=generator)
            inputs[batch // 2 :, length // 2 :] = pad or 0  # half the batch padded
        else:
            inputs = torch.randn(batch, *meta.input_shape, generator=generator)
        return inputs, torch.randint(0, meta.num_classes, (batch,), generator=generator)

    def answer(self, outputs: torch.Tensor, meta: DataMeta, top_k: int = 5) -> list[dict[str, Any]]:
        """The most likely class and the top-k class probabilities of each input."""
        probabilities = outputs.float().softmax(-1)
        classes = meta.classes or [str(i) for i in range(probabilities.shape[1])]
        values, indices = probabilities.topk(max(1, min(top_k, probabilities.shape[1])), dim=1)
        return [
            {
                "label": classes[int(idx[0])],
                "probabilities": {
                    classes[int(i)]: float(v) for v, i in zip(vals, idx, strict=True)
                },
            }
            for vals, idx in zip(values, indices, strict=True)
        ]

    def report_sections(self) -> list[Section]:
        from dlab.tasks import classification_report

        return classification_report.sections()
