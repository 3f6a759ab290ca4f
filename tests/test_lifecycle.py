"""Compression (quantize, distill, prune) and ONNX export, each producing a verified artifact."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from conftest import train_small

import dlab
from dlab import compress
from dlab.cli import main
from dlab.errors import DlabError, RecipeError
from dlab.export import export_onnx


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    return train_small(
        tmp_path_factory,
        "mlp",
        {
            "data": {"name": "mnist_sample"},
            "model": {"name": "mlp", "hidden": [64, 32]},
            "train": {"epochs": 2},
        },
    )


def comparison(run):
    return {row["model"]: row for row in run.dir.meta["compression"]["comparison"]}


@pytest.mark.slow  # a real training run of 10-20 s: not a unit test
def test_static_int8_cnn_is_smaller_as_accurate_and_reloads_identically(image_run, tmp_path):
    quantized = compress.quantize_run(image_run.path, "int8", runs_dir=tmp_path)
    rows = comparison(quantized)
    assert set(rows) == {"float32", "int8-static"}
    assert rows["int8-static"]["size_bytes"] < 0.4 * rows["float32"]["size_bytes"]
    assert abs(rows["int8-static"]["accuracy"] - rows["float32"]["accuracy"]) < 0.02
    assert "Conv" in quantized.dir.meta["compression"]["quantized_layers"]
    reloaded = dlab.load(quantized.path)
    x = torch.randn(5, 1, 28, 28)
    torch.testing.assert_close(
        reloaded.model(x), quantized.model(x)
    )  # re-quantized exactly as measured
    ((label, probability),) = reloaded.predict(x[:1], top_k=1)[0].top
    expected = reloaded.model(x[:1]).softmax(-1)[0]
    assert label == reloaded.meta.classes[int(expected.argmax())]
    assert probability == pytest.approx(float(expected.max()), abs=1e-6)
    html = (quantized.path / "report.html").read_text()
    assert 'id="compression"' in html and "section-error" not in html
    assert reloaded.dir.meta["test"]["accuracy"] == pytest.approx(rows["int8-static"]["accuracy"])


def test_static_int8_for_a_1d_conv_net_on_sound(sound_run, tmp_path):
    quantized = compress.quantize_run(sound_run.path, "int8", runs_dir=tmp_path)
    rows = comparison(quantized)
    assert set(rows) == {"float32", "int8-static"}  # Conv1d layers: calibrated static int8
    # a tiny model (16 channels): 0.65 of its float size; fsdd_cnn1d measured 0.27
    assert rows["int8-static"]["size_bytes"] < 0.8 * rows["float32"]["size_bytes"]
    assert abs(rows["int8-static"]["accuracy"] - rows["float32"]["accuracy"]) < 0.1
    assert "Conv" in quantized.dir.meta["compression"]["quantized_layers"]


@pytest.mark.parametrize("fixture", ["text_run", "lstm_text_run"])
def test_dynamic_int8_for_linear_and_recurrent_text_models(fixture, request, tmp_path):
    run = request.getfixturevalue(fixture)
    quantized = compress.quantize_run(run.path, "int8", runs_dir=tmp_path)
    assert quantized.dir.meta["compression"]["mode"] == "int8-dynamic"
    layers = quantized.dir.meta["compression"]["quantized_layers"]
    assert ("LSTM" in layers) == (fixture == "lstm_text_run") and "Linear" in layers
    assert "Embedding" in layers  # 8-bit rows: most of a text model's bytes
    reloaded = dlab.load(quantized.path)
    tokens = reloaded._encode_texts(["a wonderful moving film", "i hated it"])
    strided = tokens.t().contiguous().t()  # e.g. a column slice: the int8 kernel wants contiguous
    assert not strided.is_contiguous()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(strided), reloaded.model(tokens))
    rows = comparison(quantized)
    assert rows["int8-dynamic"]["size_bytes"] < rows["float32"]["size_bytes"]
    assert dlab.load(quantized.path).predict(["a wonderful moving film"])[0].label in ("pos", "neg")


def test_unstructured_pruning_reaches_embeddings_and_recurrent_weights(lstm_text_run, tmp_path):
    pruned = compress.prune_run(lstm_text_run.path, 0.8, finetune_epochs=1, runs_dir=tmp_path)
    assert pruned.dir.meta["compression"]["nonzero_weights"] == pytest.approx(0.2, abs=0.01)
    model = dlab.load(pruned.path).model
    for weight in (model.embed.weight, model.rnn.weight_hh_l0, model.rnn.weight_ih_l0):
        assert (weight == 0).float().mean() > 0.1  # global: every kind of matrix lost a share


@pytest.mark.slow  # a real training run of 10-20 s: not a unit test
def test_unstructured_pruning_zeroes_weights_and_fine_tunes(image_run, tmp_path):
    pruned = compress.prune_run(
        image_run.path, 0.7, finetune_epochs=1, runs_dir=tmp_path, progress=False
    )
    details = pruned.dir.meta["compression"]
    assert details["nonzero_weights"] == pytest.approx(0.3, abs=0.01)
    rows = comparison(pruned)
    assert (
        rows[pruned.recipe.name]["size_bytes"] < 0.6 * rows["original"]["size_bytes"]
    )  # gzip sees the zeros
    assert rows[pruned.recipe.name]["accuracy"] > rows["original"]["accuracy"] - 0.05
    reloaded = dlab.load(pruned.path).model  # a plain model again: masks folded in
    assert not any("mask" in name for name in reloaded.state_dict())


@pytest.mark.slow  # a whole flow, 15-25 s: outside the unit tests
def test_structured_pruning_builds_a_smaller_model(image_run, mlp_run, tmp_path):
    cnn = compress.prune_run(
        image_run.path,
        0.5,
        structured_channels=True,
        finetune_epochs=1,
        runs_dir=tmp_path,
        progress=False,
    )
    assert cnn.recipe.model.channels == [2, 4]
    assert cnn.model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    rows = comparison(cnn)
    assert rows[cnn.recipe.name]["parameters"] < rows["original"]["parameters"]
    mlp = compress.prune_run(
        mlp_run.path,
        0.5,
        structured_channels=True,
        finetune_epochs=1,
        runs_dir=tmp_path,
        progress=False,
    )
    rows = comparison(mlp)
    assert mlp.recipe.model.hidden == [32, 16]
    assert rows[mlp.recipe.name]["accuracy"] > rows["original"]["accuracy"] - 0.1


def test_structured_slicing_keeps_the_kept_units_exactly(mlp_run):
    from dlab.compress.prune import structured

    model = mlp_run.model
    small, fields = structured(model, mlp_run.recipe.model, 0.0001)  # keep everything
    x = torch.randn(4, 1, 28, 28)
    assert fields == {"hidden": [64, 32]}
    torch.testing.assert_close(small(x), model(x))


@pytest.mark.slow  # a real training run of 10-20 s: not a unit test
def test_distillation_trains_a_student_with_and_without_the_teacher(image_run, tmp_path):
    student = tmp_path / "student.yaml"
    student.write_text(
        yaml.safe_dump(
            {
                "name": "student",
                "data": {"name": "mnist_sample"},
                "model": {"name": "mlp", "hidden": [32]},
                "train": {"epochs": 2},
            }
        )
    )
    distilled = compress.distill_run(
        image_run.path, student, alpha=0.7, temperature=3.0, runs_dir=tmp_path, progress=False
    )
    rows = comparison(distilled)
    assert set(rows) == {"teacher", "student (distilled)", "student (no teacher, same seed)"}
    assert rows["student (distilled)"]["parameters"] < rows["teacher"]["parameters"]
    assert rows["student (distilled)"]["accuracy"] > 0.8
    assert distilled.dir.meta["compressed_from"] == str(image_run.path)


def test_distillation_loss_formula():
    from dlab.compress.distill import DistillationLoss

    teacher = torch.nn.Linear(4, 3)
    loss = DistillationLoss(teacher, torch.nn.CrossEntropyLoss(), alpha=0.25, temperature=2.0)
    x, y, student = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]), torch.randn(5, 3)
    t = teacher(x).detach()
    p_t, log_p_s = (t / 2).softmax(-1), (student / 2).log_softmax(-1)
    kl = (p_t * (p_t.log() - log_p_s)).sum(-1).mean()
    expected = 0.25 * kl * 4 + 0.75 * torch.nn.functional.cross_entropy(student, y)
    torch.testing.assert_close(loss(student, y, x), expected)
    torch.testing.assert_close(
        loss(student, y), torch.nn.functional.cross_entropy(student, y)
    )  # validation: plain CE


def test_compression_errors(image_run, gpt_run, tmp_path, capsys):
    with pytest.raises(RecipeError, match="between 0 and 1"):
        compress.prune_run(image_run.path, 1.5, runs_dir=tmp_path)
    with pytest.raises(DlabError, match="supported for classifiers; .* is a language model"):
        compress.quantize_run(gpt_run.path, runs_dir=tmp_path)
    with pytest.raises(DlabError, match="should be one of int8, int8-dynamic, int8-static"):
        compress.quantize_run(image_run.path, "int4", runs_dir=tmp_path)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"data": {"name": "digits"}, "model": {"name": "mlp"}}))
    with pytest.raises(
        RecipeError, match="the student trains on digits but the teacher knows mnist_sample"
    ):
        compress.distill_run(image_run.path, other, runs_dir=tmp_path)
    assert main(["compress", str(image_run.path)]) == 2
    assert "exactly one of --quantize, --distill or --prune" in capsys.readouterr().err


@pytest.mark.parametrize(
    "fixture", ["image_run", "text_run", "lstm_text_run", "gpt_run", "sound_run"]
)
def test_onnx_export_matches_pytorch_at_new_batch_sizes_and_lengths(fixture, request, tmp_path):
    run = request.getfixturevalue(fixture)
    result = export_onnx(run.path, tmp_path / "model.onnx")
    assert result.max_abs_error < 1e-4
    assert result.exporter == (
        "torchscript" if fixture == "lstm_text_run" else "dynamo (torch.export)"
    )
    assert result.opset == (17 if fixture == "lstm_text_run" else 20)
    session = ort.InferenceSession(result.path, providers=["CPUExecutionProvider"])
    meta = run.meta
    from dlab.models.examples import example_batch

    x, _ = example_batch(meta, 3, seed=7)
    if meta.input_kind == "tokens":
        x = x[:, :9]
    produced = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = run.model(x).numpy()
    np.testing.assert_allclose(produced, expected, atol=1e-4)
    assert dlab.load(run.path).dir.meta["export"]["opset"] == result.opset


@pytest.mark.slow  # a real training run of 10-20 s: not a unit test
def test_export_refuses_quantized_runs_and_failed_verification(image_run, tmp_path, monkeypatch):
    quantized = compress.quantize_run(image_run.path, "int8-dynamic", runs_dir=tmp_path)
    with pytest.raises(DlabError, match="is torch-quantized; export its float source"):
        export_onnx(quantized.path)
    monkeypatch.setattr("dlab.export.TOLERANCE", -1.0)  # nothing can pass
    with pytest.raises(DlabError, match="onnxruntime differs from PyTorch"):
        export_onnx(image_run.path, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()
