"""Text -> token ids and back: character, word, and BPE/WordPiece (trained with HF `tokenizers`).

Every tokenizer is trained on the training split only, saved with the run as tokenizer.json, and
reloaded identically by predict, generate and serve. Ids 0-3 are <pad> <unk> <bos> <eos> where
specials are used (character language models do without, so Tiny Shakespeare has 65 symbols).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from dlab._io import atomic_write_text
from dlab.errors import DataError, InputError
from dlab.recipe import Section

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
PAD, UNK, BOS, EOS = range(4)
_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]", re.UNICODE)


class TokenizerConfig(Section):
    """How text becomes token ids."""

    kind: Literal["char", "word", "bpe", "wordpiece", "pretrained"] = Field(
        "word",
        description="char, word, bpe (byte-level), wordpiece, or pretrained (a model's own, from path)",
    )
    path: str | None = Field(
        None, description="pretrained: minilm, smollm2, a model folder or a .gguf file"
    )
    lowercase: bool = Field(True, description="lower-case text first (word and wordpiece)")
    vocab_size: int = Field(
        20000, ge=8, description="largest vocabulary (word) or the target size (bpe, wordpiece)"
    )
    min_freq: int = Field(
        1, ge=1, description="drop words seen fewer times in training (word, bpe, wordpiece)"
    )
    specials: bool = Field(True, description="reserve <pad> <unk> <bos> <eos> as ids 0-3")


class Tokenizer:
    """Base class: encode, decode, the special ids, and JSON (de)serialisation."""

    kind = ""

    def __init__(self, specials: bool = True):
        self.has_specials = specials

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str, specials: bool = False) -> list[int]:
        """Token ids of `text`; `specials` adds what a pretrained model expects around it ([CLS] ... [SEP])."""
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def pad_id(self) -> int | None:
        """Padding id, or None without specials."""
        return PAD if self.has_specials else None

    def to_json(self) -> dict[str, Any]:
        """Everything needed to rebuild this tokenizer."""
        return {"kind": self.kind, "specials": self.has_specials, **self.state()}

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json atomically."""
        atomic_write_text(path, json.dumps(self.to_json(), ensure_ascii=False))

    @staticmethod
    def load(path: str | Path) -> Tokenizer:
        """Read a tokenizer written by save()."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: unreadable tokenizer ({exc})") from None
        return from_json(data)


class CharTokenizer(Tokenizer):
    """One id per character (after the specials, if any)."""

    kind = "char"

    def __init__(self, chars: Sequence[str], specials: bool = True):
        super().__init__(specials)
        self.symbols = (SPECIALS if specials else []) + list(chars)
        self.index = {c: i for i, c in enumerate(self.symbols)}

    @classmethod
    def train(cls, texts: Iterable[str], config: TokenizerConfig) -> CharTokenizer:
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        return cls(sorted(chars), config.specials)

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode(self, text: str, specials: bool = False) -> list[int]:
        if self.has_specials:
            return [self.index.get(c, UNK) for c in text]
        try:
            return [self.index[c] for c in text]
        except KeyError as exc:
            raise InputError(
                f"character {exc.args[0]!r} is not in this model's vocabulary of {self.vocab_size}"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        skip = len(SPECIALS) if self.has_specials else 0
        return "".join(self.symbols[i] for i in ids if i >= skip)

    def state(self) -> dict[str, Any]:
        skip = len(SPECIALS) if self.has_specials else 0
        return {"chars": self.symbols[skip:]}


class WordTokenizer(Tokenizer):
    """Words and punctuation marks; the most frequent `vocab_size` seen `min_freq` times."""

    kind = "word"

    def __init__(self, words: Sequence[str], lowercase: bool = True):
        super().__init__(True)
        self.lowercase = lowercase
        self.symbols = SPECIALS + list(words)
        self.index = {w: i for i, w in enumerate(self.symbols)}

    @classmethod
    def train(cls, texts: Iterable[str], config: TokenizerConfig) -> WordTokenizer:
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(_WORD.findall(text.lower() if config.lowercase else text))
        ranked = sorted(
            (w for w, n in counts.items() if n >= config.min_freq), key=lambda w: (-counts[w], w)
        )
        return cls(ranked[: config.vocab_size - len(SPECIALS)], config.lowercase)

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def tokens(self, text: str) -> list[str]:
        """The words and marks of `text`, as the vocabulary sees them."""
        return _WORD.findall(text.lower() if self.lowercase else text)

    def encode(self, text: str, specials: bool = False) -> list[int]:
        return [self.index.get(w, UNK) for w in self.tokens(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.symbols[i] for i in ids if i >= len(SPECIALS))

    def state(self) -> dict[str, Any]:
        return {"words": self.symbols[len(SPECIALS) :], "lowercase": self.lowercase}


class SubwordTokenizer(Tokenizer):
    """Byte-level BPE or WordPiece, trained and run by the HF `tokenizers` library."""

    def __init__(self, kind: str, serialized: str):
        super().__init__(True)
        from tokenizers import Tokenizer as HFTokenizer

        self.kind = kind
        self.serialized = serialized
        self.backend = HFTokenizer.from_str(serialized)

    @classmethod
    def train(cls, texts: Iterable[str], config: TokenizerConfig) -> SubwordTokenizer:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

        if config.kind == "bpe":
            backend = HFTokenizer(models.BPE(unk_token="<unk>"))
            backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            backend.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=config.vocab_size,
                min_frequency=config.min_freq,
                special_tokens=SPECIALS,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            )
        else:
            backend = HFTokenizer(models.WordPiece(unk_token="<unk>"))
            backend.normalizer = normalizers.Sequence(
                [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()]
                if config.lowercase
                else [normalizers.NFC()]
            )
            backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            backend.decoder = decoders.WordPiece()
            trainer = trainers.WordPieceTrainer(
                vocab_size=config.vocab_size,
                min_frequency=config.min_freq,
                special_tokens=SPECIALS,
                show_progress=False,
            )
        backend.train_from_iterator(texts, trainer)
        return cls(config.kind, backend.to_str())

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str, specials: bool = False) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode([int(i) for i in ids if i >= len(SPECIALS)])

    def state(self) -> dict[str, Any]:
        return {"backend": json.loads(self.serialized)}


class PretrainedTokenizer(Tokenizer):
    """A pretrained model's own tokenizer (HF tokenizers), loaded, never trained."""

    kind = "pretrained"

    def __init__(self, serialized: str, pad_id: int, source: str):
        super().__init__(True)
        from tokenizers import Tokenizer as HFTokenizer

        self.serialized, self._pad_id, self.source = serialized, pad_id, source
        self.backend = HFTokenizer.from_str(serialized)
        self.backend.no_padding()  # dlab pads and truncates its own batches
        self.backend.no_truncation()

    @classmethod
    def from_source(cls, source: str) -> PretrainedTokenizer:
        """Load from `minilm`, `smollm2`, a model folder with tokenizer.json, or a .gguf file."""
        from dlab.models.hub import resolve

        local = resolve(source)
        if local.gguf is None and (local.folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer as HFTokenizer

            backend = HFTokenizer.from_file(str(local.folder / "tokenizer.json"))
        else:
            backend = local.auto_tokenizer().backend_tokenizer
        pad = next(
            (
                backend.token_to_id(t)
                for t in ("[PAD]", "<pad>", "<|endoftext|>", "</s>")
                if backend.token_to_id(t) is not None
            ),
            0,
        )
        return cls(backend.to_str(), pad, source)

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, text: str, specials: bool = False) -> list[int]:
        return self.backend.encode(text, add_special_tokens=specials).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=True)

    def state(self) -> dict[str, Any]:
        return {
            "backend": json.loads(self.serialized),
            "pad_id": self._pad_id,
            "source": self.source,
        }


def train_tokenizer(texts: Sequence[str], config: TokenizerConfig) -> Tokenizer:
    """A tokenizer of `config.kind` trained on `texts` (pretrained ones are loaded, not trained)."""
    if config.kind == "pretrained":
        if not config.path:
            raise DataError(
                "data.tokenizer.path: a pretrained tokenizer needs path (minilm, smollm2, a folder or a .gguf)"
            )
        return PretrainedTokenizer.from_source(config.path)
    if not texts:
        raise DataError("tokenizer: no training text")
    if config.kind == "char":
        return CharTokenizer.train(texts, config)
    if config.kind == "word":
        return WordTokenizer.train(texts, config)
    return SubwordTokenizer.train(texts, config)


def from_json(data: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from to_json()."""
    kind = data.get("kind")
    if kind == "char":
        return CharTokenizer(data["chars"], data.get("specials", True))
    if kind == "word":
        return WordTokenizer(data["words"], data.get("lowercase", True))
    if kind in ("bpe", "wordpiece"):
        return SubwordTokenizer(kind, json.dumps(data["backend"]))
    if kind == "pretrained":
        return PretrainedTokenizer(
            json.dumps(data["backend"]), data["pad_id"], data.get("source", "")
        )
    raise DataError(f"tokenizer: unknown kind {kind!r}")
