"""Speech recognition as a task: CTC against a brute-force sum over alignments, greedy decoding,
error rates, and a connected-digit model that trains, transcribes, reports and serves."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from fastapi.testclient import TestClient

import dlab
from dlab.tasks.transcription import error_rates, greedy
from dlab.training.losses import CTC
from dlab.training.metrics import IGNORE


def _collapse(path: tuple[int, ...]) -> list[int]:
    return [s for s, _ in itertools.groupby(path) if s != 0]


def test_ctc_loss_is_minus_log_the_sum_over_every_alignment():
    """The registered CTC against its definition: enumerate all C^T frame paths."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, dtype=torch.float64)  # 2 inputs, 4 frames, blank + 2 symbols
    targets = torch.tensor([[1, 2], [2, IGNORE]])
    probabilities = logits.softmax(-1)
    expected = []
    for b, target in enumerate([[1, 2], [2]]):
        total = sum(
            math.prod(float(probabilities[b, t, s]) for t, s in enumerate(path))
            for path in itertools.product(range(3), repeat=4)
            if _collapse(path) == target
        )
        expected.append(-math.log(total) / len(target))  # divided by the target's length
    loss = CTC()(logits, targets)
    assert float(loss) == pytest.approx(sum(expected) / 2, rel=1e-6)


def test_greedy_decoding_merges_repeats_and_drops_blanks():
    frames = [0, 4, 4, 0, 0, 6, 0, 6, 6]  # "_33__5_55": output i is symbol i - 1
    outputs = torch.nn.functional.one_hot(torch.tensor([frames]), 11).float()
    assert greedy(outputs) == [[3, 5, 5]]


def test_error_rates_count_substitutions_deletions_and_insertions():
    rates = error_rates([[1, 2, 3], [4, 5], [6, 7, 8, 9]], [[1, 2, 4], [4, 5, 6], [6, 7, 8]])
    # 1 substitution + 1 deletion + 1 insertion over 3 + 3 + 3 reference words
    assert rates == {"wer": pytest.approx(3 / 9), "cer": pytest.approx(3 / 9), "ser": 1.0}
    assert error_rates([[1], [2]], [[1], [2]]) == {"wer": 0.0, "cer": 0.0, "ser": 0.0}


@pytest.fixture(scope="module")
def transcriber(tmp_path_factory):
    recipe = {
        "name": "digits_ctc",
        "data": {
            "name": "fsdd_connected",
            "utterances": 600,
            "frames": 300,
            "max_digits": 4,
            "batch_size": 32,
        },
        "model": {"name": "cnn1d", "channels": [64, 64, 64], "outputs": "every"},
        "train": {
            "epochs": 14,
            "loss": "ctc",
            "metrics": [],
            "optimizer": {"name": "adamw", "lr": 0.005},
            "scheduler": "onecycle",
            "grad_clip": 5.0,
        },
    }
    return dlab.train(recipe, runs_dir=tmp_path_factory.mktemp("ctc"), progress=False)


def test_a_connected_digit_model_learns_to_transcribe(transcriber):
    test = transcriber.dir.meta["evaluation"]["test"]
    assert list(test) == ["wer", "cer", "ser", "beam_wer", "loss", "samples"]
    assert test["samples"] == 150
    assert test["wer"] < 0.15  # measured 0.044 after 14 epochs; chance is about 1.0
    assert test["beam_wer"] <= test["wer"] + 0.02  # beam search is never much worse


def test_it_transcribes_through_predict_the_report_and_serve(transcriber):
    from dlab.data import build
    from dlab.serve import build_app

    bundle = build(transcriber.recipe.data, transcriber.recipe.seed)
    inputs, targets = next(iter(bundle.test.epoch(0)))
    truth = [" ".join(str(int(t) - 1) for t in row if t != IGNORE) for row in targets[:6]]
    said = [p.label for p in transcriber.predict(inputs[:6])]
    assert sum(s == t for s, t in zip(said, truth, strict=True)) >= 4
    page = (transcriber.path / "report.html").read_text(encoding="utf-8")
    assert "Word error rate" in page and "section-error" not in page and "transcript" in page
    assert "Alignments: where each symbol is heard" in page
    with TestClient(build_app(transcriber.path, max_wait_ms=1)) as client:
        raw = inputs[:2] * torch.tensor(transcriber.meta.std) + torch.tensor(transcriber.meta.mean)
        answer = client.post("/predict", json={"inputs": raw.tolist()})
    assert answer.status_code == 200, answer.text
    assert [a["label"] for a in answer.json()["predictions"]] == said[:2]


@pytest.mark.parametrize("name", ["cnn1d", "gru", "transformer_classifier"])
def test_the_speech_models_read_mfcc_frames(name):
    from dlab.models import build
    from dlab.models.cnn1d import SPEECH_META
    from dlab.recipe import from_dict

    model = build(from_dict({"data": {"name": "fsdd"}, "model": {"name": name}}).model, SPEECH_META)
    frames = torch.randn(3, 92, 13)
    frames[0, :40] = 0  # a short clip, padded in front
    assert model(frames).shape == (3, 10)


@pytest.mark.slow  # a real training run of 10-20 s: not a unit test
def test_a_model_trained_on_wav_recordings_transcribes_a_wav_utterance(tmp_path):
    """fsdd_wav_connected: utterances from recordings, with dlab's own features, so a WAV file
    of several digits is transcribed by `predict` as in training (padded at its end)."""
    import numpy as np
    from conftest import tone

    from dlab.data.audio import write_wav

    recordings = tmp_path / "recordings"
    recordings.mkdir()
    for speaker in ("ana", "ben", "cy"):  # digit d whistles at 300·1.28^d Hz (300-2800)
        for digit in range(10):
            for i in range(4):
                clip = tone(300 * 1.28**digit, 0.25, seed=100 * digit + i)
                write_wav(recordings / f"{digit}_{speaker}_{i}.wav", clip, 8000)
    recipe = {
        "name": "wav_ctc",
        "data": {
            "name": "fsdd_wav_connected",
            "path": str(recordings),
            "utterances": 800,
            "frames": 140,
            "max_digits": 4,
            "batch_size": 32,
        },
        "model": {"name": "cnn1d", "channels": [64, 64], "outputs": "every"},
        "train": {
            "epochs": 15,
            "loss": "ctc",
            "metrics": [],
            "optimizer": {"name": "adamw", "lr": 0.005},
            "scheduler": "onecycle",
        },
    }
    run = dlab.train(recipe, runs_dir=tmp_path / "runs", progress=False)
    assert run.meta.details.audio is not None  # the features travel with the run
    wer = run.dir.meta["evaluation"]["test"]["wer"]
    assert wer < 0.2, wer  # test speaker "cy" never heard in training
    said = np.concatenate([tone(300 * 1.28**d, 0.25, seed=7 + d) for d in (3, 1, 4)])
    utterance = tmp_path / "three-one-four.wav"
    write_wav(utterance, said, 8000)
    assert run.predict([utterance])[0].label == "3 1 4"


def _brute_force_best(log_probs):
    """The transcript of highest total probability, summing every alignment (tiny inputs)."""
    import itertools

    frames, outputs = log_probs.shape
    totals = {}
    for path in itertools.product(range(outputs), repeat=frames):
        collapsed, previous = [], 0
        for c in path:
            if c != previous and c != 0:
                collapsed.append(c - 1)
            previous = c
        weight = float(sum(log_probs[t, c] for t, c in enumerate(path)).exp())
        totals[tuple(collapsed)] = totals.get(tuple(collapsed), 0.0) + weight
    return list(max(totals, key=totals.get))


def test_beam_search_finds_the_most_probable_transcript_over_all_alignments():
    from dlab.tasks.transcription import beam_search

    generator = torch.Generator().manual_seed(0)
    disagreements = 0
    for _ in range(30):
        logits = torch.randn(1, 5, 3, generator=generator) * 2
        best = _brute_force_best(logits[0].log_softmax(-1))
        assert beam_search(logits, width=50, floor=-1e9)[0] == best
        disagreements += greedy(logits)[0] != best
    assert disagreements > 0  # greedy's best path is not always the best transcript
    # "a", "a" with a blank between is two symbols; without, one
    frames = torch.full((1, 3, 2), -20.0)
    frames[0, [0, 2], 1], frames[0, 1, 0] = 0.0, 0.0
    assert beam_search(frames)[0] == [0, 0]
    frames[0, 1, 1], frames[0, 1, 0] = 0.0, -20.0
    assert beam_search(frames)[0] == [0]


def test_character_error_rate_counts_symbols_without_separators():
    rates = error_rates([[1, 2, 3], [4]], [[1, 2, 3], [4, 5]])
    assert rates["cer"] == pytest.approx(1 / 5)
