"""Stopping training cleanly: the first SIGINT or SIGTERM finishes the current step (and writes
a checkpoint, where there is a run folder); a second SIGINT aborts at once."""

from __future__ import annotations

import signal
import threading
from typing import Any


class GracefulStop:
    """First SIGINT/SIGTERM asks the loop to stop after the current step; a second SIGINT aborts."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
