"""The pinned connections' network stream (private; used by ``_guard``'s backend): it
finds its socket once, and reads wide.

Before every request, httpcore's connection pool asks each idle keep-alive connection
whether its socket became readable (the server closed it). With anyio's streams, each
question rebuilds the stream's table of typed attributes to find the raw socket: about
0.1 ms a question, several questions a request (one per pooled connection, before the
request and again when its response closes). On a feed re-check where most answers are a
304, that was a sixth of the service's CPU. :class:`CachedSocketStream` keeps the socket
it was opened with and answers those two questions itself; everything else is passed on.

httpcore also reads 64 KiB at a time, so a 700 KB image went through h11, httpcore and
anyio in 11 trips instead of 3 (asyncio itself reads 256 KiB): 20-25 % of a download's
CPU on loopback (benchmarks/RESULTS.md, section 9). The stream asks for at least
``READ_BYTES`` per read.
"""

from __future__ import annotations

import select
import socket
import ssl
from typing import Any

import httpcore

__all__ = ["READ_BYTES", "CachedSocketStream", "readable"]

READ_BYTES = 256 * 1024  # asked of the socket per read, at least


def readable(sock: socket.socket | None) -> bool:
    """Return True if ``sock`` has data (or an end of file) to read now, or is closed."""
    if sock is None or sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class CachedSocketStream(httpcore.AsyncNetworkStream):
    """Wraps a stream, answering ``socket`` and ``is_readable`` from its socket and
    reading at least ``READ_BYTES`` at a time."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        """Read up to ``READ_BYTES`` (or ``max_bytes`` if larger)."""
        return await self._inner.read(max(max_bytes, READ_BYTES), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Write all of ``buffer``."""
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        """Close the stream."""
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
    ) -> httpcore.AsyncNetworkStream:
        """Upgrade to TLS; the TLS stream is wrapped the same way."""
        upgraded = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        return CachedSocketStream(upgraded)

    def get_extra_info(self, info: str) -> Any:
        """Answer ``socket`` and ``is_readable`` from the cached socket; ask the stream
        for anything else."""
        if info == "socket":
            return self._socket
        if info == "is_readable":
            return readable(self._socket)
        return self._inner.get_extra_info(info)
