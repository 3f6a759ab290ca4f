"""The DataLoader path, for data that does not fit in memory or needs per-sample decoding.

The order is still a function of (seed, epoch) and a resumed epoch skips the batches already
done, so checkpoints stay exact; `num_workers` processes decode samples in parallel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from dlab.data.bundle import Batch, epoch_generator


class WorkerLoader:
    """Batches from a map-style Dataset through torch's DataLoader and worker processes."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        num_workers: int = 0,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        drop_last: bool = False,
    ):
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.num_workers, self.transform, self.drop_last = num_workers, transform, drop_last
        self.device = torch.device("cpu")

    @property
    def num_samples(self) -> int:
        """Samples per epoch."""
        return len(self.dataset)  # type: ignore[arg-type]

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if (self.drop_last or rest == 0) else full + 1

    def to(self, device: torch.device) -> WorkerLoader:
        """Batches are moved to `device` as they are produced (pinned memory on CUDA)."""
        self.device = torch.device(device)
        return self

    def _batches(self, epoch: int) -> list[list[int]]:
        order = (
            torch.randperm(self.num_samples, generator=epoch_generator(self.seed, epoch))
            if self.shuffle
            else torch.arange(self.num_samples)
        )
        chunks = order.split(self.batch_size)
        return [c.tolist() for c in chunks[: len(self)]]

    def sample_batch(self) -> Batch:
        """The first batch, unshuffled and unaugmented."""
        items = [self.dataset[i] for i in range(min(self.batch_size, self.num_samples))]
        return torch.stack([x for x, _ in items]), torch.as_tensor([y for _, y in items])

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches of `epoch`, skipping the first `start`."""
        batches = self._batches(epoch)[start:]
        if not batches:
            return
        loader = DataLoader(
            self.dataset,
            batch_sampler=batches,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for x, y in loader:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            yield (self.transform(x) if self.transform else x), y


class TensorPairs(Dataset):
    """A map-style view of in-memory (inputs, targets) tensors, for the DataLoader path."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor):
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        return self.inputs[index], self.targets[index]
