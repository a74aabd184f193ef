"""A loopback image server for the benchmarks that costs the machine as little as it can.

The pipeline benchmarks run the image server in the benchmark's own process, on the
same two cores as the service they measure, while sharp and bare Pillow read the same
files with no server at all. ``http.server`` cost about 1 ms of CPU per download (its
header parsing, a copy of every body to add the trailer), 3-4 % of a core during a
pipeline run, taken from the service under test. This server answers a GET on a kept
-alive connection with one ``sendmsg`` of the prepared header, the file's bytes and the
URL's trailer (no copy), one thread per connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Mapping

__all__ = ["ImageServer"]

_MAX_HEAD = 64 * 1024


class ImageServer:
    """Serves ``files`` (path -> (bytes, content type)) over HTTP/1.1 keep-alive on a free
    loopback port; with ``distinct``, a URL with a query gets its own bytes (the file, then
    ``\\0pipeline <query>`` after its end, which decoders ignore)."""

    def __init__(self, files: Mapping[str, tuple[bytes, str]], *, distinct: bool) -> None:
        self.files = files
        self.distinct = distinct
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.server_address: tuple[str, int] = self._socket.getsockname()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:  # closed by shutdown()
                return
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections.add(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        pending = b""
        try:
            while True:
                while b"\r\n\r\n" not in pending:
                    chunk = connection.recv(65536)
                    if not chunk or len(pending) > _MAX_HEAD:
                        return
                    pending += chunk
                head, _, pending = pending.partition(b"\r\n\r\n")
                self._respond(connection, head.split(b" ", 2)[1].decode("latin-1"))
        except OSError:
            return
        finally:
            with self._lock:
                self._connections.discard(connection)
            connection.close()

    def _respond(self, connection: socket.socket, target: str) -> None:
        path, _, query = target.partition("?")
        if path not in self.files:
            body, kind, status, trailer = b"not found", "text/plain", "404 Not Found", b""
        else:
            (body, kind), status = self.files[path], "200 OK"
            trailer = b"\0pipeline " + query.encode() if self.distinct and query else b""
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body) + len(trailer)}\r\n\r\n"
        ).encode("latin-1")
        parts = [memoryview(head), memoryview(body), memoryview(trailer)]
        while parts:
            sent = connection.sendmsg(parts)
            while parts and sent >= len(parts[0]):
                sent -= len(parts.pop(0))
            if parts:
                parts[0] = parts[0][sent:]

    def shutdown(self) -> None:
        """Stop accepting and close every open connection."""
        self._socket.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (Linux)
        self._socket.close()
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):  # its client hung up meanwhile
                    connection.shutdown(socket.SHUT_RDWR)
