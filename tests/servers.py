"""Real HTTP servers on 127.0.0.1 for tests: an image server and a webhook receiver.

Both run ``http.server`` in a background thread on a free loopback port; tests talk to
them over real sockets. Nothing here touches the internet.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image

# Filled by the MongoDB fixture (tests/mongo_server.py), reported at the end of the run.
MONGODB_SERVER_USED: list[str] = []

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


@dataclass
class Route:
    """What the server answers on one path; ``responses`` are used in turn, the last repeats."""

    responses: list[tuple[int, dict[str, str], bytes]]
    hits: int = 0
    hold: threading.Event | None = None  # when set, answers wait for it (30 s at most)


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """Decode the body as JSON."""
        return json.loads(self.body)


@dataclass
class LocalServer:
    """A scriptable HTTP server on a free loopback port."""

    routes: dict[str, Route] = field(default_factory=dict)
    received: list[Recorded] = field(default_factory=list)
    body_bytes_sent: int = 0  # body bytes of every answer (what downloads cost the server)
    not_modified: int = 0  # conditional GETs answered 304
    lock: threading.Lock = field(default_factory=threading.Lock)
    httpd: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        """Return http://127.0.0.1:PORT."""
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        """Return the full URL of ``path``."""
        return self.base + path

    def add(
        self,
        path: str,
        body: bytes = b"",
        *,
        status: int = 200,
        content_type: str = "image/jpeg",
        headers: dict[str, str] | None = None,
        hold: threading.Event | None = None,
    ) -> str:
        """Serve ``body`` at ``path`` (once ``hold`` is set, if given); return its URL."""
        return self.script(
            path, [(status, {"Content-Type": content_type, **(headers or {})}, body)], hold=hold
        )

    def script(
        self,
        path: str,
        responses: list[tuple[int, dict[str, str], bytes]],
        *,
        hold: threading.Event | None = None,
    ) -> str:
        """Answer ``path`` with each response in turn (the last one repeats)."""
        with self.lock:
            self.routes[path] = Route(list(responses), hold=hold)
        return self.url(path)

    def hits(self, path: str) -> int:
        """Return how often ``path`` was requested."""
        with self.lock:
            route = self.routes.get(path)
            return route.hits if route else 0

    def posts(self) -> list[Recorded]:
        """Return the POST requests received so far."""
        with self.lock:
            return [r for r in self.received if r.method == "POST"]

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        path = handler.path.split("?", 1)[0]
        with self.lock:
            held = self.routes.get(path)
        if held is not None and held.hold is not None:
            held.hold.wait(30)
        with self.lock:
            self.received.append(
                Recorded(handler.command, handler.path, dict(handler.headers.items()), body)
            )
            route = self.routes.get(path)
            if route is None:
                status, headers, payload = 404, {"Content-Type": "text/plain"}, b"not found"
            else:
                status, headers, payload = route.responses[
                    min(route.hits, len(route.responses) - 1)
                ]
                route.hits += 1
                etag = headers.get("ETag")
                if etag and status == 200 and handler.headers.get("If-None-Match") == etag:
                    status, headers, payload = 304, {"ETag": etag}, b""
                    self.not_modified += 1
            self.body_bytes_sent += len(payload) if handler.command != "HEAD" else 0
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(payload)

    def start(self) -> LocalServer:
        """Start serving in a daemon thread."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._answer(self)

            do_POST = do_HEAD = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()


def running_server() -> Iterator[LocalServer]:
    """Yield a started server and stop it afterwards (for fixtures)."""
    server = LocalServer().start()
    try:
        yield server
    finally:
        server.stop()


def manifest(rows: list[tuple[str, str, list[str]]]) -> bytes:
    """Build a classic CSV from (serial, name, urls) rows."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["S. No.", "Product Name", "Input Image Urls"])
    for serial, name, urls in rows:
        writer.writerow([serial, name, ",".join(urls)])
    return out.getvalue().encode()


def photo(width: int = 320, height: int = 240, *, seed: int = 0, fmt: str = "JPEG") -> bytes:
    """Return a synthetic photo-like image (gradients plus noise) at high quality."""
    base = Image.linear_gradient("L").resize((width, height))
    noise = Image.effect_noise((width, height), 40 + seed % 20)
    image = Image.merge("RGB", (base, noise, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    out = io.BytesIO()
    if fmt == "JPEG":
        image.save(out, "JPEG", quality=95)
    else:
        image.save(out, fmt)
    return out.getvalue()


def corpus_images(
    limit: int, fallback: Callable[[int], bytes] = lambda i: photo(seed=i)
) -> list[bytes]:
    """Return up to ``limit`` real JPEG photographs from the corpus, or generated ones."""
    if CORPUS.is_dir():
        found = sorted(CORPUS.glob("j*.jpg"), key=lambda p: p.stat().st_size)[:limit]
        if found:
            return [p.read_bytes() for p in found]
    return [fallback(i) for i in range(limit)]
