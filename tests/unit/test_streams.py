"""The pinned connections' stream: keep-alive reuse, and a server-closed idle connection
noticed before it is reused (real sockets on loopback)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import anyio
import httpx
import pytest

from imgcompress_core._pinned import GuardedClient
from imgcompress_core._streams import readable


class KeepAliveServer:
    """Answers every request with 200 "ok" on a kept-alive connection; with
    ``close_idle`` it closes each connection right after its first answer (without
    saying so), as a server whose keep-alive timeout ran out does."""

    def __init__(self, close_idle: bool) -> None:
        self.close_idle = close_idle
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            pending = b""
            while True:
                while b"\r\n\r\n" not in pending:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    pending += chunk
                _, pending = pending.split(b"\r\n\r\n", 1)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                if self.close_idle:
                    return

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(params=[False, True], ids=["kept-alive", "closed-by-server"])
def server(request: pytest.FixtureRequest) -> Iterator[KeepAliveServer]:
    running = KeepAliveServer(close_idle=request.param)
    yield running
    running.close()


def get_twice(port: int) -> list[bytes]:
    """Two GETs one after the other through one guarded client."""

    async def main() -> list[bytes]:
        client = GuardedClient(
            timeout=httpx.Timeout(5),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
            allow_private_networks=True,
        )
        bodies = []
        try:
            for _ in range(2):
                async with client.open("GET", f"http://127.0.0.1:{port}/x") as response:
                    bodies.append(await response.aread())
                await anyio.sleep(0.2)  # the closing server's FIN arrives
        finally:
            await client.aclose()
        return bodies

    return anyio.run(main)


def test_second_request_reuses_or_replaces_the_connection(server: KeepAliveServer) -> None:
    assert get_twice(server.port) == [b"ok", b"ok"]
    # Kept alive: one connection for both. Closed by the server while idle: the pool saw
    # the socket readable (end of file) and opened a new one instead of failing.
    assert server.connections == (2 if server.close_idle else 1)


def test_readable_tells_idle_from_closed() -> None:
    left, right = socket.socketpair()
    try:
        assert not readable(left)
        right.sendall(b"x")
        time.sleep(0.05)
        assert readable(left)
        left.recv(1)
        right.close()
        time.sleep(0.05)
        assert readable(left)  # end of file
    finally:
        left.close()
    assert readable(left)  # closed
    assert readable(None)
