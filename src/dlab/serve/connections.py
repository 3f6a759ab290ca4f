"""A header timeout for uvicorn's HTTP/1.1 connections (it has none of its own).

uvicorn closes an idle keep-alive connection after `timeout_keep_alive`, but a client that sends
part of a request's headers and then waits (slowloris) holds its connection, and a slot of
`--limit-concurrency`, for as long as it likes. This protocol gives every request's headers
`header_timeout` seconds from the connection's start, or from the first byte after the last
response, to arrive complete; otherwise the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderTimeout(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers are too slow."""

    header_timeout: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self._between_requests():
            self._arm()  # the first byte of the next request starts its clock
        before = self.cycle
        super().data_received(data)
        if self.cycle is not before:  # h11 produced a request: its headers are complete
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if self._between_requests() and not self.transport.is_closing():
            self.transport.close()


def with_header_timeout(seconds: float) -> type[HeaderTimeout]:
    """The protocol class for uvicorn's `http=` setting, with this timeout."""
    return type("HeaderTimeout", (HeaderTimeout,), {"header_timeout": float(seconds)})
