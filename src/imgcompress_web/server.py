"""How ``imgcompress serve`` runs uvicorn: slow clients cannot hold connections.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` and caps a
request's headers at ``h11_max_incomplete_event_size`` bytes, but it has no time limit on
a request that is still arriving: a client that connects and sends nothing, or half its
headers, or stops half-way through its body, holds its connection (and whatever the app
has read so far) forever. Here:

- :class:`DeadlineH11Protocol`, uvicorn's h11 protocol with one more timer: from the
  moment a client owes us bytes (a new connection, the first byte of a next request, or
  the rest of a body after we answered) it has ``IMGCOMPRESS_CLIENT_TIMEOUT`` seconds to
  complete its headers (or its body); the timer is not reset by each byte, so dripping
  does not help. Past it the client gets 408 (if nothing was answered yet) and the
  connection is closed.
- While the app reads a body, :class:`~imgcompress_web.security.BodyTimeoutMiddleware`
  bounds each pause and the whole body (408, then closed).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from imgcompress_core import Settings

__all__ = ["MAX_HEADER_BYTES", "DeadlineH11Protocol", "uvicorn_config"]

MAX_HEADER_BYTES = 16 * 1024  # a request's line and headers together (h11 answers 400 past it)

_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 31\r\n\r\nthe request took too long: 408\n"
)


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on the bytes a client owes."""

    client_timeout: float = 30.0  # set by a subclass per server (see uvicorn_config)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request's headers."""
        self._owed: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        """Handle the bytes, then start or stop the clock."""
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        """After an answer, the clock runs if the client still owes part of its body."""
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock."""
        self._stop_clock()
        super().connection_lost(exc)

    def _owes(self) -> bool:
        """True while the client must send more before anything can happen."""
        theirs = self.conn.their_state
        if theirs is h11.IDLE:  # headers not complete (not while idle between requests)
            return self.timeout_keep_alive_task is None
        if theirs is h11.SEND_BODY:  # the app reads the body under its own deadline
            return self.conn.our_state in (h11.DONE, h11.MUST_CLOSE)
        return False

    def _watch(self) -> None:
        if self.transport is None or self.transport.is_closing() or not self._owes():
            self._stop_clock()
        elif self._owed is None:
            self._owed = self.loop.call_later(self.client_timeout, self._expired)

    def _stop_clock(self) -> None:
        owed = getattr(self, "_owed", None)
        if owed is not None:
            owed.cancel()
            self._owed = None

    def _expired(self) -> None:
        self._owed = None
        if self.transport.is_closing() or not self._owes():
            return
        if self.conn.our_state is h11.IDLE:  # nothing answered yet: say why we hang up
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def uvicorn_config(app: Any, settings: Settings, *, verbose: bool = False) -> uvicorn.Config:
    """Return the uvicorn configuration ``serve`` runs ``app`` with."""
    protocol = type(
        "ServeH11Protocol", (DeadlineH11Protocol,), {"client_timeout": settings.client_timeout}
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol,
        log_level="debug" if verbose else "info",
        timeout_keep_alive=settings.keep_alive_timeout,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_graceful_shutdown=30,
    )
