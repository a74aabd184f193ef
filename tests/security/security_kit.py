"""Tools for the security battery: raw loopback listeners, fake DNS, a recording socket layer.

Nothing here sends a packet anywhere but the loopback interface: ``RecordingBackend``
connects only to 127/8 and ::1 (and to loopback listeners standing in for "public"
addresses), and refuses everything else after recording the attempt.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpcore

PUBLIC_V4 = "93.184.216.34"  # looks public; only ever "reached" through RecordingBackend routes
PUBLIC_V4_B = "93.184.216.35"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"

Handler = Callable[["Conn"], None]


@dataclass
class Conn:
    """One accepted connection, handed to a handler in its own thread."""

    sock: socket.socket
    peer: tuple[str, int]
    local: tuple[str, int]
    stop: threading.Event
    sni: list[str | None] = field(default_factory=list)

    def read_head(self, timeout: float = 5.0) -> bytes:
        """Read up to the end of the request headers (b"" if the client gave up)."""
        self.sock.settimeout(timeout)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = self.sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (OSError, TimeoutError):
            pass
        return data

    def send(self, data: bytes) -> bool:
        """Send, returning False once the client has gone away."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True


def response(
    status: int = 200,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    length: int | None = -1,
) -> bytes:
    """An HTTP/1.1 response; ``length`` None omits Content-Length, -1 uses the body's."""
    lines = [f"HTTP/1.1 {status} X"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if length is not None:
        lines.append(f"Content-Length: {len(body) if length == -1 else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def reply(data: bytes) -> Handler:
    """A handler that reads the request, sends ``data`` and closes."""

    def handle(conn: Conn) -> None:
        conn.read_head()
        conn.send(data)

    return handle


class RawServer:
    """A TCP listener on a loopback address that records every connection it accepts."""

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler or reply(response(200, b"canary", {"Content-Type": "image/jpeg"}))
        self.accepted: list[tuple[str, int]] = []
        self.sni: list[str | None] = []
        self._tls = tls
        if tls is not None:
            tls.sni_callback = self._record_sni
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(64)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        thread = threading.Thread(target=self._serve, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _record_sni(self, _sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        with self._lock:
            self.sni.append(name)

    @property
    def connections(self) -> int:
        """How many connections were accepted."""
        with self._lock:
            return len(self.accepted)

    def url(self, path: str = "/", host: str | None = None) -> str:
        """Return http://HOST:PORT/PATH (host defaults to the listener's address)."""
        name = host or self.host
        if ":" in name:
            name = f"[{name}]"
        return f"http://{name}:{self.port}{path}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                sock, peer = self._listener.accept()
            except OSError:  # stop() shuts the listener down, which wakes accept()
                continue
            with self._lock:
                self.accepted.append((peer[0], peer[1]))
                self._socks.append(sock)
            thread = threading.Thread(target=self._handle, args=(sock, peer), daemon=True)
            thread.start()
            with self._lock:
                self._threads.append(thread)

    def _handle(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        conn = Conn(sock, peer, sock.getsockname()[:2], self._stop)
        try:
            if self._tls is not None:
                sock.settimeout(5)
                wrapped = self._tls.wrap_socket(sock, server_side=True)
                with self._lock:
                    self._socks.append(wrapped)
                conn.sock = wrapped
            self.handler(conn)
        except (OSError, ssl.SSLError):
            pass
        finally:
            for s in {id(conn.sock): conn.sock, id(sock): sock}.values():
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """Stop accepting, close every socket, join the threads."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with self._lock:
            threads = list(self._threads)
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(5)
        for sock in socks:
            sock.close()
        self._listener.close()


@dataclass
class Canaries:
    """Listeners on 127.0.0.1, 127.0.0.2, 127.0.0.3 (and ::1 when available), one port."""

    port: int
    servers: list[RawServer]

    @property
    def connections(self) -> int:
        """Connections accepted by any canary."""
        return sum(s.connections for s in self.servers)


@dataclass
class Certificate:
    """A self-signed certificate for one DNS name, and contexts for both ends."""

    name: str
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context presenting this certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this certificate."""
        return ssl.create_default_context(cafile=str(self.cert))


# --- DNS -------------------------------------------------------------------------------


class FakeResolver:
    """Answers from a table; a list of answers per name is used in turn (rebinding)."""

    def __init__(self, table: dict[str, Sequence[str] | list[Sequence[str]]] | None = None):
        self.table: dict[str, list[Sequence[str]]] = {}
        self.calls: list[str] = []
        for name, answers in (table or {}).items():
            self.set(name, answers)

    def set(self, name: str, answers: Sequence[str] | list[Sequence[str]]) -> None:
        """Answer ``name`` with ``answers`` (a list of lists: one per call, the last repeats)."""
        if answers and not isinstance(answers[0], str):
            self.table[name] = [list(a) for a in answers]
        else:
            self.table[name] = [list(answers)]  # type: ignore[arg-type]

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        turns = self.table.get(host)
        if turns is None:
            raise socket.gaierror(socket.EAI_NONAME, f"fake resolver: no such name {host}")
        count = self.calls.count(host)
        return turns[min(count, len(turns)) - 1]


async def failing_resolver(host: str, port: int) -> Sequence[str]:
    """A resolver that always fails."""
    raise socket.gaierror(socket.EAI_NONAME, "no DNS in this test")


# --- sockets ---------------------------------------------------------------------------


def is_loopback(address: str) -> bool:
    """Return True for 127/8 and ::1."""
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """The socket layer under the pin: records every connect, touches loopback only.

    ``routes`` maps a public-looking address to the loopback address that stands in for
    it. Any other non-loopback address is recorded and refused, so a broken guard shows
    up as a recorded attempt, never as a packet on the network. ``blackhole`` addresses
    hang until httpcore's connect timeout.
    """

    def __init__(
        self,
        routes: dict[str, str] | None = None,
        *,
        allow_loopback: bool = True,
        blackhole: Iterable[str] = (),
    ) -> None:
        self.routes = dict(routes or {})
        self.allow_loopback = allow_loopback
        self.blackhole = set(blackhole)
        self.attempts: list[tuple[str, int]] = []
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.attempts.append((host, port))
        if host in self.blackhole:
            try:
                with anyio.fail_after(timeout):
                    await anyio.sleep_forever()
            except TimeoutError as exc:
                raise httpcore.ConnectTimeout(f"blackhole {host}") from exc
        target = self.routes.get(host)
        if target is None and self.allow_loopback and is_loopback(host):
            target = host
        if target is None or not is_loopback(target):
            raise httpcore.ConnectError(f"test backend: refusing to connect to {host}:{port}")
        return await self._inner.connect_tcp(target, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("no unix sockets in tests")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


def ipv6_loopback_available() -> bool:
    """Return True if ::1 can be bound here."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


# --- hostile files ---------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (8-bit RGB) with one tiny IDAT."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def gif_frame_bomb(width: int, height: int, frames: int) -> bytes:
    """An animated GIF: a ``width`` x ``height`` canvas and ``frames`` 1x1 frames."""
    head = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    loop = b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    frame = b"!\xf9\x04\x04\x0a\x00\x00\x00" + b",\0\0\0\0\x01\0\x01\0\0" + b"\x02\x02\x44\x01\x00"
    return head + loop + frame * frames + b";"


def elapsed(start: float) -> float:
    """Seconds since ``start`` (a perf_counter value)."""
    return time.perf_counter() - start


class Router:
    """A keep-alive handler answering by path; records each request head."""

    def __init__(self, routes: dict[str, bytes] | None = None) -> None:
        self.routes = dict(routes or {})
        self.heads: list[bytes] = []

    def add(self, path: str, body: bytes, status: int = 200, **headers: str) -> None:
        """Answer ``path`` with ``body`` (headers given as Python names: Content_Type=...)."""
        named = {k.replace("_", "-"): v for k, v in headers.items()}
        self.routes[path] = response(status, body, {"Content-Type": "image/jpeg", **named})

    def hits(self, path: str) -> int:
        """How often ``path`` was requested."""
        return sum(1 for head in self.heads if head.split(b" ", 2)[1] == path.encode())

    def header(self, index: int, name: str) -> str | None:
        """A header of the ``index``-th request."""
        for line in self.heads[index].decode("latin-1").split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    def __call__(self, conn: Conn) -> None:
        while not conn.stop.is_set():
            head, _, body = conn.read_head().partition(b"\r\n\r\n")
            parts = head.split(b" ", 2)
            if len(parts) < 3:
                return
            self.heads.append(head + b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:  # consume a request body, to keep the connection in step
                more = conn.sock.recv(65536)
                if not more:
                    return
                body += more
            if not conn.send(self.routes.get(parts[1].decode(), response(404, b"no route"))):
                return


def jpeg_scan_bomb(size: int, scans: int) -> bytes:
    """A progressive greyscale JPEG whose last scan is repeated ``scans`` more times.

    Each copy is a few bytes, but libjpeg runs every scan over the whole image, so the
    decoding time grows with ``size * size * scans``.
    """
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (size, size), 128).save(out, "JPEG", progressive=True, quality=50)
    data = out.getvalue()
    at, last_scan = 2, b""
    while data[at + 1] != 0xD9:  # walk the segments up to EOI
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        end = at + 2 + length
        if data[at + 1] == 0xDA:  # SOS: the entropy-coded data runs to the next marker
            while not (data[end] == 0xFF and data[end + 1] not in (0x00, *range(0xD0, 0xD8))):
                end += 1
            last_scan = data[at:end]
        at = end
    return data[:at] + last_scan * scans + b"\xff\xd9"
