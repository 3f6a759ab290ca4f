"""Text classification data and tokenizers: known facts of SST-2 and TREC, round trips, bucketing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlab.data import build
from dlab.data.sequences import PaddedLoader, pad_sequences
from dlab.data.tokenizers import PAD, Tokenizer, TokenizerConfig, train_tokenizer
from dlab.errors import DataError, InputError
from dlab.recipe import from_dict

CORPUS = [
    "The cat sat on the mat.",
    "A dog's life, isn't it?",
    "Über straße — café!",
    "the the the cat",
]


def data_config(**fields):
    return from_dict({"data": fields, "model": {"name": "mlp"}}).data


@pytest.mark.parametrize("kind", ["char", "word", "bpe", "wordpiece"])
def test_tokenizers_round_trip_through_json(tmp_path, kind):
    tokenizer = train_tokenizer(
        CORPUS * 5, TokenizerConfig(kind=kind, vocab_size=300, lowercase=False)
    )
    tokenizer.save(tmp_path / "tokenizer.json")
    again = Tokenizer.load(tmp_path / "tokenizer.json")
    for text in CORPUS:
        ids = tokenizer.encode(text)
        assert again.encode(text) == ids and all(i >= 4 for i in ids)
        if kind in ("char", "bpe"):
            assert tokenizer.decode(ids) == text  # lossless
    assert again.vocab_size == tokenizer.vocab_size


def test_word_tokenizer_vocabulary_rules():
    tokenizer = train_tokenizer(CORPUS, TokenizerConfig(kind="word", min_freq=2))
    assert tokenizer.symbols[:6] == [
        "<pad>",
        "<unk>",
        "<bos>",
        "<eos>",
        "the",
        "cat",
    ]  # by frequency, then name
    assert tokenizer.encode("The dog") == [4, 1]  # lower-cased; unseen -> <unk>
    capped = train_tokenizer(CORPUS, TokenizerConfig(kind="word", vocab_size=8))
    assert capped.vocab_size == 8


def test_char_tokenizer_without_specials_names_unknown_characters():
    tokenizer = train_tokenizer(["abc"], TokenizerConfig(kind="char", specials=False))
    assert tokenizer.vocab_size == 3 and tokenizer.encode("cab") == [2, 0, 1]
    with pytest.raises(InputError, match="character 'z' is not in this model's vocabulary of 3"):
        tokenizer.encode("z")


@pytest.mark.shared_data
def test_sst2_known_facts(real_data_dir):
    bundle = build(data_config(name="sst2"), seed=0)
    assert bundle.meta.sizes == {"train": 6920, "val": 872, "test": 1821}
    counts = {
        name: np.bincount(getattr(bundle, name).fields["labels"].numpy()).tolist()
        for name in ("train", "val", "test")
    }
    assert counts == {"train": [3310, 3610], "val": [428, 444], "test": [912, 909]}
    assert bundle.meta.classes == ["negative", "positive"] and bundle.meta.input_kind == "tokens"
    tokens, labels = next(bundle.train.epoch(0))
    assert tokens.dtype == torch.long and tokens.shape[0] == 64 and labels.shape == (64,)


@pytest.mark.shared_data
def test_trec_is_latin1_and_has_six_classes(real_data_dir):
    bundle = build(data_config(name="trec", val_size=0), seed=0)
    assert bundle.meta.sizes == {"train": 5452, "test": 500}
    assert bundle.meta.num_classes == 6
    with pytest.raises(
        DataError,
        match=r"TREC.train.all: not valid utf-8 at byte \d+ \(line \d+\); set data.encoding, e.g. latin-1",
    ):
        build(data_config(name="trec", encoding="utf-8"))


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_text_csv_and_its_errors(tmp_path):
    rows = "\n".join(
        f'"review {i} {"good" if i % 2 else "bad"}",{"pos" if i % 2 else "neg"}' for i in range(40)
    )
    path = write(tmp_path / "reviews.csv", "text,label\n" + rows + "\n")
    bundle = build(data_config(name="text_csv", path=str(path)), seed=0)
    assert bundle.meta.classes == ["neg", "pos"]
    assert sum(bundle.meta.sizes.values()) == 40 and bundle.meta.sizes["test"] == 8
    with pytest.raises(
        DataError,
        match="has no column 'labels' \\(did you mean 'label'\\?\\); columns: text, label",
    ):
        build(data_config(name="text_csv", path=str(path), label_column="labels"))
    ragged = write(tmp_path / "ragged.csv", "text,label\nfine,pos\nbroken,pos,extra\n")
    with pytest.raises(DataError, match="row 3 has 3 cells but the header has 2"):
        build(data_config(name="text_csv", path=str(ragged)))
    empty = write(tmp_path / "empty.csv", "   \n")
    with pytest.raises(DataError, match="empty.csv: the file is empty"):
        build(data_config(name="text_csv", path=str(empty)))
    latin = write(tmp_path / "latin.tsv", "text\tlabel\ncafé crème\tx\nthé\ty\n", "latin-1")
    with pytest.raises(DataError, match="not valid utf-8"):
        build(data_config(name="text_csv", path=str(latin)))
    with pytest.raises(DataError, match="file not found"):
        build(data_config(name="text_csv", path=str(tmp_path / "absent.csv")))


def test_padding_and_bucketing():
    rng = np.random.default_rng(0)
    sequences = [list(rng.integers(4, 50, rng.integers(1, 60))) for _ in range(1000)]
    tokens, lengths = pad_sequences(sequences, PAD, 40)
    assert tokens.shape == (1000, 40) and int(lengths.max()) == 40
    assert all(int((tokens[i] != PAD).sum()) == min(len(s), 40) for i, s in enumerate(sequences))

    def make(bucket):
        return PaddedLoader(
            {"tokens": tokens, "y": torch.arange(1000)},
            {"tokens": lengths},
            lambda b: (b["tokens"], b["y"]),
            32,
            True,
            7,
            bucket,
        )

    def padding(loader):
        return sum(int((x == PAD).sum()) for x, _ in loader.epoch(3))

    bucketed, plain = make(True), make(False)
    assert sorted(torch.cat([y for _, y in bucketed.epoch(3)]).tolist()) == list(
        range(1000)
    )  # each once
    assert padding(bucketed) < padding(plain) / 4
    assert [y.tolist() for _, y in bucketed.epoch(3)] == [
        y.tolist() for _, y in make(True).epoch(3)
    ]
    assert [y.tolist() for _, y in bucketed.epoch(3, start=5)] == [
        y.tolist() for _, y in bucketed.epoch(3)
    ][5:]
    x, _ = next(bucketed.epoch(0))
    assert x.shape[1] == int((x != PAD).sum(1).max())  # trimmed to the batch's longest
