"""Micro-batching: concurrent requests that arrive within a few milliseconds share one forward pass.

A request waits at most `max_wait_ms` for company; a batch holds at most `max_batch` inputs. The
model runs in one worker thread, so the event loop keeps accepting requests meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch


class MicroBatcher:
    """Collects (inputs, future) pairs and answers them from shared forward passes."""

    def __init__(
        self,
        fn: Callable[[torch.Tensor], np.ndarray],
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int], None] | None = None,
        pad_id: int | None = None,
    ):
        """`pad_id`: token requests of different lengths are right-padded with it to the batch's
        longest (each request is padded only to its own longest text)."""
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait_ms / 1000
        self.pad_id = pad_id
        self.on_batch = on_batch or (lambda n: None)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlab-model")
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None

    async def submit(self, inputs: torch.Tensor) -> np.ndarray:
        """Outputs for `inputs` (N, ...), computed alone or with other requests' inputs."""
        loop = asyncio.get_running_loop()
        if self.max_batch <= 1:  # batching off: one forward pass per request
            self.on_batch(len(inputs))
            return await loop.run_in_executor(self.executor, self.fn, inputs)
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.worker = loop.create_task(self._work())
        future: asyncio.Future = loop.create_future()
        await self.queue.put((inputs, future))
        return await future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.queue is not None
        while True:
            pending = [await self.queue.get()]
            size = len(pending[0][0])
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                pending.append(item)
                size += len(item[0])
            self.on_batch(size)
            try:
                batch = join([p[0] for p in pending], self.pad_id)
                outputs = await loop.run_in_executor(self.executor, self.fn, batch)
            except Exception as exc:  # every request of the batch learns what went wrong
                for _, future in pending:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for inputs, future in pending:
                if not future.done():
                    future.set_result(outputs[start : start + len(inputs)])
                start += len(inputs)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)


def join(parts: list[torch.Tensor], pad_id: int | None) -> torch.Tensor:
    """Requests' inputs as one batch; (N, T) token ids of different T right-padded to the
    longest with `pad_id` (padding changes no answer: the models mask it)."""
    if len({tuple(p.shape[1:]) for p in parts}) == 1:
        return torch.cat(parts)
    if pad_id is None or any(p.ndim != 2 for p in parts):
        shapes = sorted({tuple(p.shape[1:]) for p in parts})
        raise ValueError(f"requests of different input shapes cannot share a batch: {shapes}")
    width = max(p.shape[1] for p in parts)
    return torch.cat(
        [torch.nn.functional.pad(p, (0, width - p.shape[1]), value=pad_id) for p in parts]
    )
