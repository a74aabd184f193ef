"""One uploader must not stall everyone (issue: hardening, finding 1): a request of 48
images on a server that sends one byte a second, then a one-image request on a healthy
host; the second completes within 10 s, on SQLite and on MongoDB."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from imgcompress_core import Imgcompress, RequestStatus, Settings
from servers import LocalServer, photo

pytestmark = pytest.mark.anyio


class TrickleServer:
    """An HTTP server on loopback that answers every GET with a 1000-byte body sent one
    byte a second, holding its connection for as long as the client waits."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.open_connections = 0
        self.most_open = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with self._lock:
            self.open_connections += 1
            self.most_open = max(self.most_open, self.open_connections)
        try:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n"
            )
            for _ in range(1000):
                if self._stopped.wait(1.0):
                    return
                conn.sendall(b"x")
        except OSError:
            return
        finally:
            with self._lock:
                self.open_connections -= 1
            conn.close()

    def url(self, n: int) -> str:
        """Return the URL of trickling image ``n`` (the host name differs from the healthy
        server's 127.0.0.1, as a slow host would)."""
        return f"http://localhost:{self.port}/slow/{n}.jpg"

    def stop(self) -> None:
        """Stop accepting and end every trickle."""
        self._stopped.set()
        self.listener.close()


@pytest.fixture
def trickle_server() -> Iterator[TrickleServer]:
    """A server that sends one byte a second."""
    server = TrickleServer()
    try:
        yield server
    finally:
        server.stop()


def csv_of(urls: list[str]) -> bytes:
    """One product per URL."""
    lines = ["S. No.,Product Name,Input Image Urls"]
    lines += [f"{n + 1},SKU{n + 1},{url}" for n, url in enumerate(urls)]
    return ("\n".join(lines) + "\n").encode()


async def test_a_trickling_host_does_not_stall_another_request(
    image_server: LocalServer,
    trickle_server: TrickleServer,
    test_settings: Settings,
    store: tuple[str, str | None],
) -> None:
    """48 trickling downloads hold only their host's share of the slots: a one-image
    request on a healthy host, uploaded just after, completes within 10 s."""
    _name, uri = store
    settings: Any = test_settings.model_copy(update={"mongodb_uri": uri, "shutdown_grace": 0.2})
    healthy = image_server.add("/ok.jpg", photo(64, 48))
    async with Imgcompress(settings) as ic:
        slow_id = await ic.submit(csv_of([trickle_server.url(n) for n in range(48)]))
        with anyio.fail_after(10):  # the slow request has taken what it may
            while trickle_server.open_connections < settings.connections_per_host:
                await anyio.sleep(0.05)
        started = time.monotonic()
        fast_id = await ic.submit(csv_of([healthy]))
        with anyio.fail_after(30):
            while (await ic.status(fast_id, detail=False)).request.status is RequestStatus.PENDING:
                await anyio.sleep(0.05)
        took = time.monotonic() - started
        report = await ic.status(fast_id)
        slow = await ic.status(slow_id, detail=False)
    assert report.request.status is RequestStatus.COMPLETED
    assert took < 10, f"the healthy request took {took:.1f} s"
    assert slow.request.status is RequestStatus.PENDING  # still trickling, not failed
    assert trickle_server.most_open <= settings.connections_per_host
