"""Sentence pairs for sequence-to-sequence models: Multi30k (en-de) or any tab-separated file.

One BPE vocabulary is shared by both languages. Batches are ((source (B, S), target_in (B, T)),
target_out (B, T)): target_in starts with <bos>, target_out ends with <eos>, and padded positions
of target_out are -100 so the loss ignores them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from dlab.data.bundle import DataBundle, DataMeta
from dlab.data.files import read_lines
from dlab.data.sequences import PaddedLoader, pad_sequences
from dlab.data.store import RemoteDataset, RemoteFile
from dlab.data.tokenizers import BOS, EOS, PAD, TokenizerConfig, train_tokenizer
from dlab.errors import DataError
from dlab.recipe import DataConfig
from dlab.registry import DATASETS

IGNORE = -100


def _bpe() -> TokenizerConfig:
    return TokenizerConfig(kind="bpe", vocab_size=8000, min_freq=2)


class TranslationConfig(DataConfig):
    """Fields of translation data sets."""

    tokenizer: TokenizerConfig = Field(
        default_factory=_bpe, description="one vocabulary for both languages"
    )
    max_length: int = Field(64, ge=2, description="truncate longer sentences to this many tokens")
    bucket: bool = Field(True, description="batch sentences of similar length together")
    encoding: str = Field("utf-8", description="text encoding")


Pairs = tuple[list[str], list[str]]


def build_pairs_bundle(
    splits: dict[str, Pairs],
    config: TranslationConfig,
    dataset: str,
    seed: int,
    languages: tuple[str, str],
) -> DataBundle:
    """Tokenize (training pairs only), pad and batch sentence pairs."""
    if config.limit is not None:  # a random subset, in the original order
        order = np.random.default_rng(config.split_seed + 2).permutation(len(splits["train"][0]))
        keep = np.sort(order[: config.limit])
        sources, targets = splits["train"]
        splits["train"] = ([sources[i] for i in keep], [targets[i] for i in keep])
    tokenizer = train_tokenizer(splits["train"][0] + splits["train"][1], config.tokenizer)
    limit = config.max_length

    def loader(name: str) -> PaddedLoader | None:
        if name not in splits:
            return None
        sources, targets = splits[name]
        source_ids = [tokenizer.encode(s)[:limit] for s in sources]
        target_ids = [tokenizer.encode(t)[: limit - 1] for t in targets]
        source, source_len = pad_sequences([s or [EOS] for s in source_ids], PAD, limit)
        target_in, target_len = pad_sequences([[BOS, *t] for t in target_ids], PAD, limit)
        target_out, _ = pad_sequences([[*t, EOS] for t in target_ids], IGNORE, limit)
        train = name == "train"
        return PaddedLoader(
            {"source": source, "target_in": target_in, "target_out": target_out},
            {"source": source_len, "target_in": target_len, "target_out": target_len},
            lambda b: ((b["source"], b["target_in"]), b["target_out"]),
            config.batch_size if train else config.eval_batch_size,
            shuffle=train,
            seed=seed,
            bucket=config.bucket,
            sort_key="source",
        )

    meta = DataMeta(
        dataset=dataset,
        task="seq2seq",
        input_kind="tokens",
        input_shape=(limit,),
        num_classes=tokenizer.vocab_size,
        sizes={name: len(pair[0]) for name, pair in splits.items()},
        details={
            "vocab_size": tokenizer.vocab_size,
            "pad_id": PAD,
            "bos_id": BOS,
            "eos_id": EOS,
            "max_length": limit,
            "tokenizer": tokenizer.kind,
            "source": languages[0],
            "target": languages[1],
        },
    )
    references = {name: pair for name, pair in splits.items() if name != "train"}
    loaders = [loader(name) for name in ("train", "val", "test")]
    return DataBundle(*loaders, meta, tokenizer=tokenizer, extra={"texts": references})


MULTI30K_FILES = {
    "train.en.gz": ("0065d13af80720a55ca8153d126e6627", 568_929),
    "train.de.gz": ("81ff90b99829c0cd4b1b587d394afd39", 637_044),
    "val.en.gz": ("2b69aa9253948ac9f67e94917272dd40", 21_650),
    "val.de.gz": ("6e0e229eb049e3fc99a1ef02fb2d5f91", 24_681),
    "test_2016_flickr.en.gz": ("ff2c0fcb4893a13bd73414306bc250ae", 21_077),
    "test_2016_flickr.de.gz": ("efd67d314d98489b716b145475101932", 22_890),
}
MULTI30K = RemoteDataset(
    "multi30k",
    tuple(RemoteFile(name, md5, size) for name, (md5, size) in MULTI30K_FILES.items()),
    ("https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw",),
)


class Multi30kConfig(TranslationConfig):
    """Multi30k Task 1: image descriptions in English and German."""

    direction: Literal["en-de", "de-en"] = Field("en-de", description="source-target languages")


@DATASETS.register(
    "multi30k",
    config=Multi30kConfig,
    summary="Multi30k: 31,014 English-German image descriptions (WMT 2016 multimodal task 1)",
    remote=MULTI30K,
    size="31,014 sentence pairs, 1.3 MB",
    splits="29,000 train / 1,014 val / 1,000 test (2016 flickr)",
    source="multi30k/dataset; `dlab data fetch multi30k`",
)
def build_multi30k(config: Multi30kConfig, seed: int = 0) -> DataBundle:
    folder = MULTI30K.require()
    MULTI30K.verify()
    source, target = config.direction.split("-")
    splits = {}
    for name, stem in (("train", "train"), ("val", "val"), ("test", "test_2016_flickr")):
        src = read_lines(folder / f"{stem}.{source}.gz", config.encoding)
        tgt = read_lines(folder / f"{stem}.{target}.gz", config.encoding)
        if len(src) != len(tgt):
            raise DataError(
                f"{folder}: {stem}.{source}.gz has {len(src)} lines but {stem}.{target}.gz has {len(tgt)}"
            )
        splits[name] = (src, tgt)
    return build_pairs_bundle(splits, config, "multi30k", seed, (source, target))


class PairsFileConfig(TranslationConfig):
    """Any file of `source<TAB>target` lines."""

    path: str = Field(description="the tab-separated pairs file")
    test_size: float = Field(0.1, ge=0, lt=1, description="fraction of pairs held out for test")


@DATASETS.register(
    "pairs_tsv",
    config=PairsFileConfig,
    summary="your own sentence pairs: one `source<TAB>target` per line",
    size="yours",
    splits="from data.val_size and data.test_size (fixed shuffle)",
    source="data.path",
)
def build_pairs_tsv(config: PairsFileConfig, seed: int = 0) -> DataBundle:
    path = Path(config.path).expanduser()
    sources, targets = [], []
    for number, line in enumerate(read_lines(path, config.encoding), start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DataError(
                f"{path}: line {number} has no tab between source and target: {line[:40]!r}"
            )
        source, target = line.split("\t", 1)
        sources.append(source.strip())
        targets.append(target.strip())
    order = np.random.default_rng(config.split_seed).permutation(len(sources))
    n_test = round(config.test_size * len(sources))
    n_val = round(config.val_size * len(sources)) if config.val_size < 1 else int(config.val_size)
    if n_test + n_val >= len(sources):
        raise DataError(
            f"{path}: {len(sources)} pairs are too few for the val and test splits asked for"
        )
    parts = {
        "test": order[:n_test],
        "val": order[n_test : n_test + n_val],
        "train": order[n_test + n_val :],
    }
    splits = {
        name: ([sources[i] for i in ids], [targets[i] for i in ids])
        for name, ids in parts.items()
        if len(ids)
    }
    return build_pairs_bundle(splits, config, path.name, seed, ("source", "target"))
