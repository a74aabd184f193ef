"""Slow clients against a real `imgcompress serve` over real sockets (issue 12, finding 7b).

Uploads that stall before their last byte used to hold their connections forever. Now a
client has IMGCOMPRESS_CLIENT_TIMEOUT seconds for its headers (counted from the first
byte, so dripping does not help) and for each pause in its body, and
IMGCOMPRESS_UPLOAD_DEADLINE seconds for the whole body; then it is answered 408 and
closed. Meanwhile everyone else is served as usual.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from procs import ServiceProcess, env_for, free_port

pytestmark = pytest.mark.slow

CLIENT_TIMEOUT = 2.0
UPLOAD_DEADLINE = 6.0
SLACK = 3.0  # scheduling and polling, on a loaded CI machine
STALLED_UPLOADS = 40

HEADER_ROW = b"S. No.,Product Name,Input Image Urls\n"


def upload_head(port: int, length: int) -> bytes:
    """The request line, headers and the start of a multipart body promising ``length``."""
    return (
        f"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {length}\r\n\r\n"
        '--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode() + HEADER_ROW


@dataclass
class Slow:
    """One slow client: what it sent, when it stopped making progress, when it was closed."""

    kind: str
    sock: socket.socket
    started: float = field(default_factory=time.monotonic)
    closed_after: float | None = None
    answer: bytes = b""

    def watch(self) -> threading.Thread:
        """Read until the server closes the connection, in a thread."""

        def run() -> None:
            self.sock.settimeout(60)
            try:
                while chunk := self.sock.recv(65536):
                    self.answer += chunk
            except OSError:
                pass
            self.closed_after = time.monotonic() - self.started

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def connect(port: int) -> socket.socket:
    """A plain TCP connection to the service."""
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def drip(sock: socket.socket, data: bytes, every: float, stop: threading.Event) -> None:
    """Send ``data`` one byte at a time, ``every`` seconds, until the server hangs up."""
    for byte in data:
        if stop.wait(every):
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return


def test_stalled_uploads_are_closed_while_others_are_served(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    """40 stalled uploads, headers that stall or drip, a body that drips, and a body the
    service does not read (it answered already) that drips: each is closed within its
    timeout, and another client's upload is accepted at once meanwhile."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service = ServiceProcess(
        [
            "serve",
            "--port", str(port),
            "--no-run-worker",
            "--client-timeout", str(CLIENT_TIMEOUT),
            "--upload-deadline", str(UPLOAD_DEADLINE),
        ],
        env_for(tmp_path),
        tmp_path / "serve.log",
    )  # fmt: skip
    services.append(service)
    service.wait_http(base)

    slow: list[Slow] = []
    stop = threading.Event()
    drippers: list[threading.Thread] = []

    def start_drip(kind: str, data: bytes, every: float, prefix: bytes = b"") -> None:
        sock = connect(port)
        sock.sendall(prefix)
        client = Slow(kind, sock)
        slow.append(client)
        thread = threading.Thread(target=drip, args=(sock, data, every, stop), daemon=True)
        thread.start()
        drippers.append(thread)

    try:
        for _ in range(STALLED_UPLOADS):  # headers and part of the body, then nothing
            sock = connect(port)
            sock.sendall(upload_head(port, 100_000) + b"1,A,https://example.com/a.jpg\n")
            slow.append(Slow("body stalls", sock))
        for _ in range(3):  # half the headers, then nothing
            sock = connect(port)
            sock.sendall(f"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
            slow.append(Slow("headers stall", sock))
        for _ in range(3):  # connected, silent
            slow.append(Slow("silent", connect(port)))
        headers = upload_head(port, 100_000)
        start_drip("headers drip", headers, every=0.2)
        start_drip("body drips", b"2,B,https://example.com/b.jpg\n" * 100, 0.2, headers)
        unread = f"POST /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 5000\r\n\r\n"
        start_drip("unread body drips", b"x" * 1000, 0.2, unread.encode())  # answered 405
        watchers = [client.watch() for client in slow]

        # Meanwhile another client's upload is accepted promptly.
        time.sleep(0.5)
        began = time.monotonic()
        csv = HEADER_ROW + b"1,A,https://example.com/a.jpg\n"
        answer = httpx.post(f"{base}/api/upload", files={"file": ("p.csv", csv)}, timeout=10)
        assert answer.status_code == 202, answer.text
        assert time.monotonic() - began < 2.0

        for watcher in watchers:
            watcher.join(timeout=UPLOAD_DEADLINE + 2 * SLACK)
    finally:
        stop.set()
        for client in slow:
            client.sock.close()

    limits: dict[str, float] = {
        "body stalls": CLIENT_TIMEOUT,
        "headers stall": CLIENT_TIMEOUT,
        "silent": CLIENT_TIMEOUT,
        "headers drip": CLIENT_TIMEOUT,
        "body drips": UPLOAD_DEADLINE,
        "unread body drips": CLIENT_TIMEOUT,
    }
    for client in slow:
        assert client.closed_after is not None, f"{client.kind}: never closed"
        limit = limits[client.kind]
        assert limit - 0.5 <= client.closed_after <= limit + SLACK, (
            client.kind,
            client.closed_after,
        )
        status = b"HTTP/1.1 405 " if client.kind == "unread body drips" else b"HTTP/1.1 408 "
        assert client.answer.startswith(status), (client.kind, client.answer[:200])
    stalled_body = next(c for c in slow if c.kind == "body stalls")
    assert b'"code":"request_timeout"' in stalled_body.answer
    assert b"client_timeout" in stalled_body.answer
    dripped_body = next(c for c in slow if c.kind == "body drips")
    assert b"upload_deadline" in dripped_body.answer
    assert httpx.get(f"{base}/health", timeout=5).status_code == 200


def test_keep_alive_connections_are_closed_when_idle(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    """A kept-alive connection that goes quiet, or starts a next request and stalls, is
    closed: the idle one after keep_alive_timeout, the stalled one after client_timeout."""
    port = free_port()
    service = ServiceProcess(
        ["serve", "--port", str(port), "--no-run-worker", "--keep-alive-timeout", "1",
         "--client-timeout", str(CLIENT_TIMEOUT)],
        env_for(tmp_path),
        tmp_path / "serve.log",
    )  # fmt: skip
    services.append(service)
    service.wait_http(f"http://127.0.0.1:{port}")
    request = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()

    def closed_after(then: Callable[[socket.socket], None]) -> float:
        with connect(port) as sock:
            sock.sendall(request)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            then(sock)
            began = time.monotonic()
            sock.settimeout(30)
            while sock.recv(65536):
                pass
            return time.monotonic() - began

    assert closed_after(lambda sock: None) <= 1 + SLACK
    partial = closed_after(lambda sock: sock.sendall(b"GET /health HTTP/1.1\r\nHo"))
    assert CLIENT_TIMEOUT - 0.5 <= partial <= CLIENT_TIMEOUT + SLACK
