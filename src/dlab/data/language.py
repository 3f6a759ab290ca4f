"""Language modelling: Tiny Shakespeare or any plain-text file as one token stream.

As in nanoGPT, the first 90% of the text trains and the last 10% validates. Batches are
(inputs (B, T), targets (B, T)) with targets the inputs shifted by one token.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from dlab.data.bundle import DataBundle, DataMeta
from dlab.data.files import read_text
from dlab.data.sequences import TokenBlockLoader
from dlab.data.store import RemoteDataset, RemoteFile
from dlab.data.tokenizers import CharTokenizer, TokenizerConfig, train_tokenizer
from dlab.errors import DataError
from dlab.recipe import DataConfig
from dlab.registry import DATASETS

TINY_SHAKESPEARE = RemoteDataset(
    "tinyshakespeare",
    (RemoteFile("input.txt", "6fb458f1232090904fb40fe944165e91", 1_115_394),),
    ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare",),
)


def _char_level() -> TokenizerConfig:
    return TokenizerConfig(kind="char", specials=False)


class LanguageModelConfig(DataConfig):
    """Fields of language-modelling data sets."""

    tokenizer: TokenizerConfig = Field(
        default_factory=_char_level, description="char (default) or bpe"
    )
    block_size: int = Field(
        128, ge=2, description="context length: tokens the model sees per example"
    )
    encoding: str = Field("utf-8", description="text encoding")


def build_language_bundle(
    text: str, config: LanguageModelConfig, dataset: str, seed: int
) -> DataBundle:
    """Split a text 90/10 (data.val_size), tokenize, and cut the token streams into blocks."""
    if config.limit is not None:
        raise DataError(
            "data.limit: not available for language modelling; use train.max_steps to train less"
        )
    fraction = config.val_size if config.val_size < 1 else config.val_size / len(text)
    cut = int(len(text) * (1 - fraction))
    train_text, val_text = text[:cut], text[cut:]
    if config.tokenizer.kind == "pretrained":
        tokenizer = train_tokenizer([], config.tokenizer)
    elif config.tokenizer.kind == "char":
        tokenizer = CharTokenizer.train(
            [text], config.tokenizer
        )  # the alphabet of the whole file, as nanoGPT
    else:
        chunks = [train_text[i : i + 10_000] for i in range(0, len(train_text), 10_000)]
        tokenizer = train_tokenizer(chunks, config.tokenizer)
    streams = {"train": torch.tensor(tokenizer.encode(train_text), dtype=torch.long)}
    if val_text:
        streams["val"] = torch.tensor(tokenizer.encode(val_text), dtype=torch.long)

    def loader(name: str) -> TokenBlockLoader | None:
        if name not in streams:
            return None
        train = name == "train"
        size = config.batch_size if train else config.eval_batch_size
        return TokenBlockLoader(streams[name], config.block_size, size, shuffle=train, seed=seed)

    meta = DataMeta(
        dataset=dataset,
        task="language_model",
        input_kind="tokens",
        input_shape=(config.block_size,),
        num_classes=tokenizer.vocab_size,
        sizes={name: len(tokens) for name, tokens in streams.items()},
        details={
            "vocab_size": tokenizer.vocab_size,
            "block_size": config.block_size,
            "tokenizer": tokenizer.kind,
            "characters": len(text),
        },
    )
    return DataBundle(loader("train"), loader("val"), None, meta, tokenizer=tokenizer)


@DATASETS.register(
    "tinyshakespeare",
    config=LanguageModelConfig,
    summary="40,000 lines of Shakespeare for character-level language models (Karpathy)",
    remote=TINY_SHAKESPEARE,
    size="1,115,394 characters, 65 distinct",
    splits="first 90% train / last 10% val",
    source="karpathy/char-rnn; `dlab data fetch tinyshakespeare`",
)
def build_tinyshakespeare(config: LanguageModelConfig, seed: int = 0) -> DataBundle:
    """Tiny Shakespeare, checked against its known md5."""
    folder = TINY_SHAKESPEARE.require()
    TINY_SHAKESPEARE.verify()
    return build_language_bundle(
        read_text(folder / "input.txt", config.encoding), config, "tinyshakespeare", seed
    )


class TextFileConfig(LanguageModelConfig):
    """Any plain-text file."""

    path: str = Field(description="the text file (.txt, or .gz)")


@DATASETS.register(
    "text_file",
    config=TextFileConfig,
    summary="your own text for a language model: any plain-text file",
    size="yours",
    splits="first 90% train / last 10% val",
    source="data.path",
)
def build_text_file(config: TextFileConfig, seed: int = 0) -> DataBundle:
    path = Path(config.path).expanduser()
    return build_language_bundle(read_text(path, config.encoding), config, path.name, seed)
