"""Batching token sequences: padded batches bucketed by length, and packed blocks for language models.

Both are in-memory and index-based like TensorLoader: the order of an epoch is a function of
(seed, epoch) only, so resuming mid-epoch replays exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from dlab.data.bundle import Batch, epoch_generator

BUCKET_CHUNK = (
    50  # batches per sorting window: enough to group lengths, small enough to stay random
)


def pad_sequences(
    sequences: Sequence[Sequence[int]], pad_id: int, max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T) right-padded ids (T = the longest, at most max_length) and the (N,) true lengths."""
    lengths = torch.tensor([min(len(s), max_length) for s in sequences], dtype=torch.long)
    width = int(lengths.max()) if len(lengths) else 1
    padded = torch.full((len(sequences), max(width, 1)), pad_id, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        n = int(lengths[row])
        padded[row, :n] = torch.as_tensor(sequence[:n], dtype=torch.long)
    return padded, lengths


BuildBatch = Callable[[dict[str, torch.Tensor]], Batch]


class PaddedLoader:
    """Batches of padded sequences, each trimmed to its own longest member.

    `fields` maps a name to a padded (N, T) tensor (or any (N, ...) tensor); `lengths` gives the
    true length of each padded field; `build` turns one batch's fields into (inputs, targets).
    With `bucket`, similar lengths are batched together: the epoch's permutation is cut into
    windows of BUCKET_CHUNK batches, each window is sorted by length, and the batches are
    shuffled again, which removes most padding without a fixed order.
    """

    def __init__(
        self,
        fields: dict[str, torch.Tensor],
        lengths: dict[str, torch.Tensor],
        build: BuildBatch,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        bucket: bool = True,
        sort_key: str | None = None,
    ):
        self.fields, self.lengths, self.build = fields, lengths, build
        self.batch_size, self.shuffle, self.seed, self.bucket = batch_size, shuffle, seed, bucket
        self.sort_key = sort_key or next(iter(lengths))

    @property
    def num_samples(self) -> int:
        """Sequences per epoch."""
        return len(next(iter(self.fields.values())))

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def to(self, device: torch.device) -> PaddedLoader:
        """Move every tensor to `device` once."""
        self.fields = {k: v.to(device) for k, v in self.fields.items()}
        self.lengths = {k: v.to(device) for k, v in self.lengths.items()}
        return self

    def batches(self, epoch: int) -> list[torch.Tensor]:
        """The index batches of `epoch`."""
        n, size = self.num_samples, self.batch_size
        key = self.lengths[self.sort_key].cpu()
        if not self.shuffle:
            order = torch.argsort(key, stable=True) if self.bucket else torch.arange(n)
            return list(order.split(size))
        generator = epoch_generator(self.seed, epoch)
        order = torch.randperm(n, generator=generator)
        if not self.bucket:
            return list(order.split(size))
        windows = order.split(size * BUCKET_CHUNK)
        batches = [b for w in windows for b in w[torch.argsort(key[w], stable=True)].split(size)]
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffled]

    def _gather(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        index = index.to(next(iter(self.fields.values())).device)
        batch = {}
        for name, values in self.fields.items():
            chosen = values[index]
            if name in self.lengths:
                chosen = chosen[:, : max(int(self.lengths[name][index].max()), 1)]
            batch[name] = chosen
        return batch

    def sample_batch(self) -> Batch:
        """The first batch_size sequences, in stored order."""
        return self.build(self._gather(torch.arange(min(self.batch_size, self.num_samples))))

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches of `epoch`, skipping the first `start`."""
        for index in self.batches(epoch)[start:]:
            yield self.build(self._gather(index))


class TokenBlockLoader:
    """Language modelling: contiguous blocks of a token stream; targets are the inputs shifted by one.

    Each epoch starts its blocks at a different offset (drawn from (seed, epoch)) so the model sees
    every boundary, and visits the blocks in a random order; every epoch has the same length.
    """

    def __init__(
        self,
        tokens: torch.Tensor,
        block_size: int,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
    ):
        if len(tokens) < block_size + 2:
            from dlab.errors import DataError

            raise DataError(
                f"data.block_size: {block_size} is longer than the text ({len(tokens)} tokens)"
            )
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.shuffle, self.seed = shuffle, seed
        self.blocks = (len(tokens) - 1 - (block_size - 1 if shuffle else 0)) // block_size

    @property
    def num_samples(self) -> int:
        """Blocks per epoch."""
        return self.blocks

    def __len__(self) -> int:
        return -(-self.blocks // self.batch_size)

    def to(self, device: torch.device) -> TokenBlockLoader:
        """Move the token stream to `device` once."""
        self.tokens = self.tokens.to(device)
        return self

    def _starts(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.blocks) * self.block_size
        generator = epoch_generator(self.seed, epoch)
        offset = int(torch.randint(0, self.block_size, (1,), generator=generator))
        return offset + torch.randperm(self.blocks, generator=generator) * self.block_size

    def _block(self, starts: torch.Tensor) -> Batch:
        index = starts.to(self.tokens.device)[:, None] + torch.arange(
            self.block_size + 1, device=self.tokens.device
        )
        window = self.tokens[index]  # (B, block_size + 1)
        return window[:, :-1], window[:, 1:]

    def sample_batch(self) -> Batch:
        """The first blocks of the stream."""
        return self._block(torch.arange(min(self.batch_size, self.blocks)) * self.block_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches of `epoch`, skipping the first `start`."""
        for starts in self._starts(epoch).split(self.batch_size)[start:]:
            yield self._block(starts)
