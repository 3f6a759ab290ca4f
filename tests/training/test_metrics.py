"""Metrics against independent references: scikit-learn's implementations and hand-computed cases.

Every case is built so that the plausible wrong formula gives another number: classes of unequal
size (micro and macro averages differ), an uneven last batch (the mean of per-batch means differs
from the mean over samples) and padding inside the targets (counting it changes the accuracy).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchmetrics
from sklearn import metrics as skm
from torch import nn
from torch.nn import functional as F

from dlab.data.bundle import DataMeta, TensorLoader
from dlab.errors import RecipeError
from dlab.training.metrics import (
    IGNORE,
    METRICS,
    build_metrics,
    classification_report,
    evaluate,
    forward,
    metric_class,
    to_device,
)
from dlab.training.tally import Tally

pytestmark = pytest.mark.unit

COUNTS = [20, 10, 8, 5, 4, 2, 1]  # 50 samples of 7 classes, far from balanced
RANKING = METRICS["ranking"]
BATCH = 7  # 50 = 7 batches of 7 and a last one of 1


def _scored_split(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits that are right more often for the large classes than for the small ones."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])
    targets = targets[torch.randperm(len(targets), generator=generator)]
    logits = torch.randn(len(targets), len(COUNTS), generator=generator, dtype=torch.float64)
    logits[torch.arange(len(targets)), targets] += (
        torch.linspace(2.0, 0.0, len(COUNTS))[targets] * 1.5
    )
    return logits.float(), targets


def _classification_meta() -> DataMeta:
    return DataMeta(
        dataset="unequal",
        task="classification",
        input_kind="vector",
        input_shape=(len(COUNTS),),
        num_classes=len(COUNTS),
        classes=[str(c) for c in range(len(COUNTS))],
    )


def test_classification_metrics_equal_scikit_learns_over_an_uneven_last_batch():
    logits, targets = _scored_split()
    loader = TensorLoader(logits, targets, batch_size=BATCH)
    assert len(targets) % BATCH == 1  # the last batch holds one sample
    names = ["accuracy", "balanced_accuracy", "top5_accuracy", "f1", "precision", "recall"]
    got = evaluate(
        nn.Identity(),
        loader,
        nn.CrossEntropyLoss(),
        build_metrics(names, _classification_meta()),
        torch.device("cpu"),
    )
    y, scores = targets.numpy(), logits.double().numpy()
    predicted = scores.argmax(1)
    expected = {
        "loss": F.cross_entropy(logits.double(), targets).item(),
        "accuracy": skm.accuracy_score(y, predicted),
        "balanced_accuracy": skm.balanced_accuracy_score(y, predicted),
        "top5_accuracy": skm.top_k_accuracy_score(y, scores, k=5, labels=range(len(COUNTS))),
        "f1": skm.f1_score(y, predicted, average="macro", zero_division=0),
        "precision": skm.precision_score(y, predicted, average="macro", zero_division=0),
        "recall": skm.recall_score(y, predicted, average="macro", zero_division=0),
    }
    # the case separates what it must: micro from macro, and the mean over samples from the
    # mean of the batches' means
    assert abs(expected["accuracy"] - expected["balanced_accuracy"]) > 0.05
    batch_means = [
        F.cross_entropy(logits[i : i + BATCH], targets[i : i + BATCH]).item()
        for i in range(0, len(targets), BATCH)
    ]
    assert abs(np.mean(batch_means) - expected["loss"]) > 0.05
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_regression_metrics_equal_scikit_learns_over_an_uneven_last_batch():
    generator = torch.Generator().manual_seed(1)
    truth = torch.randn(50, 1, generator=generator) * 3
    predicted = (
        truth + torch.randn(50, 1, generator=generator) * torch.linspace(0.1, 4, 50)[:, None]
    )
    meta = DataMeta(dataset="numbers", task="regression", input_kind="series", input_shape=(1,))
    got = evaluate(
        nn.Identity(),
        TensorLoader(predicted, truth, batch_size=BATCH),
        nn.MSELoss(),
        build_metrics(["mae", "mse", "rmse"], meta),
        torch.device("cpu"),
    )
    y, p = truth.double().numpy().ravel(), predicted.double().numpy().ravel()
    mse = skm.mean_squared_error(y, p)
    assert got == pytest.approx(
        {"loss": mse, "mae": skm.mean_absolute_error(y, p), "mse": mse, "rmse": math.sqrt(mse)},
        rel=1e-5,
    )
    assert abs(got["rmse"] - got["mse"]) > 1  # the case tells the two apart


def _padded_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    """Two sequences of 5 tokens over a vocabulary of 4; the second is padded after 2 tokens."""
    targets = torch.tensor([[0, 1, 2, 3, 0], [2, 2, IGNORE, IGNORE, IGNORE]])
    logits = torch.full((2, 5, 4), -2.0)
    right = [[1, 1, 0, 1, 0], [1, 0, 1, 1, 1]]  # the padded positions "predict" token 0
    for b in range(2):
        for t in range(5):
            token = int(targets[b, t]) if targets[b, t] != IGNORE else 0
            logits[b, t, token if right[b][t] else (token + 1) % 4] = 3.0
    return logits, targets


def test_token_accuracy_and_perplexity_skip_padding():
    logits, targets = _padded_tokens()
    accuracy = metric_class("!TokenAccuracy")()
    accuracy.update(logits, targets)
    # scored: 5 + 2 tokens; right: 3 of the first row, 1 of the second (counting padding: 4 of 10)
    assert float(accuracy.compute()) == pytest.approx(4 / 7)
    perplexity = metric_class("text.Perplexity")(ignore_index=IGNORE)
    perplexity.update(logits, targets)
    scored = targets != IGNORE
    nll = -logits.log_softmax(-1)[scored].gather(1, targets[scored][:, None]).mean()
    assert float(perplexity.compute()) == pytest.approx(math.exp(nll.item()), rel=1e-5)


def test_token_accuracy_adds_up_over_batches_and_merges_across_processes():
    logits, targets = _padded_tokens()
    whole = metric_class("!TokenAccuracy")()
    whole.update(logits[:1], targets[:1])  # 3 of 5 right
    whole.update(logits[1:], targets[1:])  # 1 of 2 right
    assert float(whole.compute()) == pytest.approx(4 / 7)
    # what a distributed evaluation does: each process counts its share, the counts are summed
    first, second = metric_class("!TokenAccuracy")(), metric_class("!TokenAccuracy")()
    first.update(logits[:1], targets[:1])
    second.update(logits[1:], targets[1:])
    first.merge_state(second)
    assert float(first.compute()) == pytest.approx(4 / 7)
    # counts stay exact integers (float32 stops counting one by one at 2**24 tokens)
    assert first.correct.dtype == first.total.dtype == torch.long


def test_token_accuracy_of_a_single_scored_token_and_of_none():
    logits, targets = _padded_tokens()
    one = targets.clone()
    one[0] = IGNORE
    one[1, 1] = IGNORE  # only the second row's first token (predicted right) is scored
    accuracy = metric_class("!TokenAccuracy")()
    accuracy.update(logits, one)
    assert float(accuracy.compute()) == 1.0
    empty = metric_class("!TokenAccuracy")()
    empty.update(logits, torch.full_like(targets, IGNORE))
    assert float(empty.compute()) == 0.0  # nothing scored: zero, not a division by zero


def _ranked_rows() -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Six users, 12 candidates each, the held-out item ranked 1st, 3rd, 10th, 11th, 12th, 2nd."""
    ranks = [1, 3, 10, 11, 12, 2]
    scores = torch.arange(12, 0, -1, dtype=torch.float32).repeat(len(ranks), 1)  # 12 > 11 > ...
    targets = torch.zeros(len(ranks), 12, dtype=torch.long)
    for row, rank in enumerate(ranks):
        targets[row, rank - 1] = 1
    return scores, targets, ranks


def test_hit_rate_and_ndcg_at_10_score_each_row_as_its_own_user():
    scores, targets, ranks = _ranked_rows()
    metrics = torchmetrics.MetricCollection(
        {name: metric_class(path)(**kwargs(None)) for name, (path, kwargs) in RANKING.items()}
    )
    got = evaluate(
        nn.Identity(),
        TensorLoader(scores, targets.float(), batch_size=4),  # rows 0-3, then 4-5: two batches
        nn.BCEWithLogitsLoss(),
        metrics,
        torch.device("cpu"),
    )
    hits = [rank <= 10 for rank in ranks]
    gains = [1 / math.log2(rank + 1) if rank <= 10 else 0.0 for rank in ranks]
    assert got["hit_rate"] == pytest.approx(np.mean(hits))  # 4 of 6
    assert got["ndcg"] == pytest.approx(np.mean(gains), rel=1e-6)
    y = targets.numpy()
    assert got["ndcg"] == pytest.approx(
        np.mean([skm.ndcg_score(y[i : i + 1], scores[i : i + 1].numpy(), k=10) for i in range(6)]),
        rel=1e-6,
    )


def test_the_classification_report_equals_scikit_learns():
    logits, targets = _scored_split(seed=3)
    classes = [f"class {c}" for c in range(len(COUNTS))]
    report = classification_report(logits.softmax(-1), targets, classes)
    y, predicted = targets.numpy(), logits.argmax(1).numpy()
    labels = list(range(len(COUNTS)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, predicted, labels=labels, zero_division=0
    )
    assert report["samples"] == 50
    assert report["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert report["macro_precision"] == pytest.approx(precision.mean())
    assert report["macro_recall"] == pytest.approx(recall.mean())
    assert report["macro_f1"] == pytest.approx(f1.mean())
    assert [row["class"] for row in report["per_class"]] == classes
    for i, row in enumerate(report["per_class"]):
        assert row["precision"] == pytest.approx(precision[i])
        assert row["recall"] == pytest.approx(recall[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["support"] == support[i] == COUNTS[i]
    # rows are true classes, columns predictions, as in scikit-learn
    assert report["confusion_matrix"] == skm.confusion_matrix(y, predicted, labels=labels).tolist()
    assert len(set(precision.round(6))) > 3  # per-class values differ: a shuffled row would show


def test_the_classification_report_keeps_a_class_that_has_no_samples():
    logits, targets = _scored_split(seed=3)
    keep = targets != len(COUNTS) - 1  # the last class (one sample) leaves the split
    classes = [f"class {c}" for c in range(len(COUNTS))]
    report = classification_report(logits[keep].softmax(-1), targets[keep], classes)
    assert [row["support"] for row in report["per_class"]] == [*COUNTS[:-1], 0]
    assert len(report["confusion_matrix"]) == len(COUNTS)


def test_the_training_tally_weighs_batches_by_size_and_skips_padding():
    tally = Tally(torch.device("cpu"), scores_accuracy=True, padded_targets=True)
    logits, targets = _padded_tokens()
    tally.add(torch.tensor(3.0), logits, targets, share=1.0)
    tally.epoch_count += len(targets)
    tally.add(torch.tensor(0.0), logits[:1], targets[:1], share=1.0)
    tally.epoch_count += 1
    # the epoch's loss is the mean over its 3 sequences, not the mean of the two batch means
    assert float(tally.epoch_loss) / tally.epoch_count == pytest.approx(2.0)
    assert int(tally.epoch_correct) == 4 + 3 and int(tally.epoch_scored) == 7 + 5


def test_unknown_metrics_are_refused_with_the_choices():
    meta = _classification_meta()
    with pytest.raises(RecipeError) as info:
        build_metrics(["acuracy"], meta)
    assert str(info.value) == (
        "train.metrics: unknown metric 'acuracy' for classification (did you mean 'accuracy'?); "
        "choose from accuracy, balanced_accuracy, top5_accuracy, f1, precision, recall"
    )
    reconstruction = DataMeta(
        dataset="x", task="reconstruction", input_kind="image", input_shape=(1, 4, 4)
    )
    with pytest.raises(RecipeError) as info:
        build_metrics(["accuracy"], reconstruction)
    assert str(info.value) == (
        "train.metrics: reconstruction has no metrics besides the loss during training "
        "(its evaluation reports the rest); set metrics: []"
    )
    assert len(build_metrics([], reconstruction)) == 0  # no metrics asked: none needed


def test_forward_spreads_a_tuple_of_inputs_over_the_models_arguments():
    """Encoder-decoders take (source, target input): a tuple is their arguments, in order."""

    class Difference(nn.Module):
        def forward(self, a, b=None):
            return a - b if b is not None else a

    a, b = torch.tensor([5.0]), torch.tensor([2.0])
    assert torch.equal(forward(Difference(), (a, b)), torch.tensor([3.0]))
    assert torch.equal(forward(Difference(), a), a)


def test_metrics_never_wait_for_other_processes():
    """Every process of a distributed job evaluates the whole split itself."""
    built = build_metrics(["accuracy", "f1"], _classification_meta())
    assert [m.sync_on_compute for m in built.values()] == [False, False]


def test_to_device_moves_nested_inputs_and_leaves_other_values():
    a, b = torch.ones(2), torch.zeros(3)
    moved = to_device((a, (b, "ids")), torch.device("meta"))
    assert isinstance(moved, tuple) and moved[0].device.type == "meta"
    assert moved[1][0].device.type == "meta" and moved[1][0].shape == (3,)
    assert moved[1][1] == "ids"
