"""Servers that misbehave: slow drips, silence, lying lengths, compression bombs, 5xx.

Real loopback servers (``allow_private_networks=True``, as tests must) with caps made
small so each case is fast. Every case ends in the right FetchError code, inside the
time and memory the caps promise.
"""

from __future__ import annotations

import gzip
import time
import tracemalloc
import zlib
from collections.abc import Callable
from email.utils import formatdate

import pytest
from security_kit import (
    PUBLIC_V4,
    Conn,
    FakeResolver,
    RawServer,
    RecordingBackend,
    elapsed,
    response,
)

from imgcompress_core.errors import FetchError
from imgcompress_core.fetch import FetchOptions, HttpxFetcher

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
HEAD = {"Content-Type": "image/jpeg"}


async def fetch_from(handler: Callable[[Conn], None], **options: float) -> FetchError | bytes:
    """Serve ``handler`` on loopback and fetch from it with small caps."""
    settings: dict[str, float] = {"max_bytes": MiB, "deadline": 5.0, "read_timeout": 5.0}
    settings.update(options)
    server = RawServer(handler)
    fetcher = HttpxFetcher(
        FetchOptions(allow_private_networks=True, **settings)  # type: ignore[arg-type]
    )
    try:
        return (await fetcher.fetch(server.url("/a.jpg"))).data
    except FetchError as exc:
        return exc
    finally:
        await fetcher.aclose()
        server.stop()


def failure(outcome: FetchError | bytes, code: str) -> FetchError:
    assert isinstance(outcome, FetchError), f"expected {code}, got {len(outcome)} bytes"
    assert outcome.code == code, outcome.message
    return outcome


# Time


def drip(head: bytes, body: bytes, interval: float) -> Callable[[Conn], None]:
    def handle(conn: Conn) -> None:
        conn.read_head()
        conn.send(head)
        for byte in body:
            if conn.stop.wait(interval) or not conn.send(bytes([byte])):
                return

    return handle


async def test_a_slow_drip_body_is_cut_off_by_the_deadline() -> None:
    head = response(200, b"", HEAD, length=1000)
    start = time.perf_counter()
    outcome = await fetch_from(drip(head, b"x" * 1000, 0.3), deadline=1.0)
    error = failure(outcome, "download_timeout")
    assert error.retryable and "download_deadline" in error.message
    assert 0.9 <= elapsed(start) < 2.5


async def test_slowly_dripped_headers_are_cut_off_by_the_deadline() -> None:
    start = time.perf_counter()
    outcome = await fetch_from(drip(b"", response(200, b"x", HEAD), 0.3), deadline=1.0)
    failure(outcome, "download_timeout")
    assert elapsed(start) < 2.5


def silent(conn: Conn) -> None:
    conn.read_head()
    conn.stop.wait(30)


async def test_a_server_that_never_answers_hits_the_read_timeout() -> None:
    start = time.perf_counter()
    outcome = await fetch_from(silent, read_timeout=0.5, deadline=10.0)
    error = failure(outcome, "download_timeout")
    assert error.retryable and "ReadTimeout" in error.message
    assert 0.4 <= elapsed(start) < 2.0


async def test_an_unreachable_address_hits_the_connect_timeout() -> None:
    backend = RecordingBackend(blackhole={PUBLIC_V4})
    fetcher = HttpxFetcher(
        FetchOptions(connect_timeout=0.3, deadline=10.0),
        resolver=FakeResolver({"slow.example": [PUBLIC_V4]}),
        network_backend=backend,
    )
    start = time.perf_counter()
    try:
        with pytest.raises(FetchError) as caught:
            await fetcher.fetch("http://slow.example/a.jpg")
    finally:
        await fetcher.aclose()
    assert caught.value.code == "download_timeout" and caught.value.retryable
    assert "ConnectTimeout" in caught.value.message
    assert elapsed(start) < 2.0


async def test_a_slow_resolver_counts_against_the_deadline() -> None:
    async def slow(host: str, port: int) -> list[str]:
        import anyio

        await anyio.sleep(30)
        return [PUBLIC_V4]

    fetcher = HttpxFetcher(FetchOptions(deadline=0.5), resolver=slow)
    start = time.perf_counter()
    try:
        with pytest.raises(FetchError) as caught:
            await fetcher.fetch("http://slow-dns.example/a.jpg")
    finally:
        await fetcher.aclose()
    assert caught.value.code == "download_timeout"
    assert elapsed(start) < 2.0


# Size


def send(data: bytes) -> Callable[[Conn], None]:
    def handle(conn: Conn) -> None:
        conn.read_head()
        conn.send(data)

    return handle


def stream(head: bytes, chunk: bytes, total: int) -> Callable[[Conn], None]:
    def handle(conn: Conn) -> None:
        conn.read_head()
        conn.send(head)
        sent = 0
        while sent < total and not conn.stop.is_set() and conn.send(chunk):
            sent += len(chunk)

    return handle


async def test_a_huge_content_length_is_refused_before_reading() -> None:
    start = time.perf_counter()
    head = response(200, b"", HEAD, length=10**12)
    outcome = await fetch_from(drip(head, b"x" * 100, 1.0))
    error = failure(outcome, "source_too_large")
    assert "max_image_bytes" in error.message and not error.retryable
    assert elapsed(start) < 1.0  # did not wait for the dripping body


async def test_a_lying_small_content_length_reads_only_what_it_claims() -> None:
    lie = response(200, b"y" * (4 * MiB), HEAD, length=100)
    outcome = await fetch_from(send(lie))
    assert outcome == b"y" * 100


async def test_a_body_shorter_than_its_content_length_fails() -> None:
    outcome = await fetch_from(send(response(200, b"z" * 10, HEAD, length=1000)))
    assert failure(outcome, "connection_failed").retryable


async def test_no_content_length_and_a_big_body_hits_the_cap() -> None:
    head = response(200, b"", {**HEAD, "Connection": "close"}, length=None)
    outcome = await fetch_from(stream(head, b"n" * 65536, 8 * MiB))
    failure(outcome, "source_too_large")


async def test_an_endless_chunked_body_hits_the_cap() -> None:
    head = response(200, b"", {**HEAD, "Transfer-Encoding": "chunked"}, length=None)
    chunk = b"10000\r\n" + b"c" * 0x10000 + b"\r\n"
    outcome = await fetch_from(stream(head, chunk, 64 * MiB))
    failure(outcome, "source_too_large")


# Content-Encoding: decoded with a bounded inflater; the cap applies after decoding


def zeros_compressed(total: int, wbits: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = bytes(MiB)
    return b"".join(packer.compress(block) for _ in range(total // MiB)) + packer.flush()


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """64 MiB of zeros, gzip-compressed to about 64 KiB."""
    return zeros_compressed(64 * MiB, 31)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "deflate-raw"])
async def test_a_compression_bomb_is_capped_after_decoding(encoding: str, gzip_bomb: bytes) -> None:
    wbits = {"gzip": 31, "deflate": 15, "deflate-raw": -15}[encoding]
    body = gzip_bomb if encoding == "gzip" else zeros_compressed(64 * MiB, wbits)
    assert len(body) < MiB  # the wire bytes alone are under the cap
    name = encoding.removesuffix("-raw")
    handler = send(response(200, body, {**HEAD, "Content-Encoding": name}))
    tracemalloc.start()
    try:
        outcome = await fetch_from(handler)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    failure(outcome, "source_too_large")
    assert peak < 8 * MiB, f"decoding peaked at {peak / MiB:.1f} MiB"


async def test_an_endless_empty_compressed_stream_hits_the_wire_cap() -> None:
    """Empty deflate blocks decode to nothing: the cap on wire bytes still ends it."""
    empty_block = b"\x00\x00\x00\xff\xff"  # a non-final stored block of length 0
    header = gzip.compress(b"")[:10]
    head = response(200, b"", {**HEAD, "Content-Encoding": "gzip"}, length=None)
    outcome = await fetch_from(stream(head + header, empty_block * 20000, 8 * MiB))
    failure(outcome, "source_too_large")


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(b"real image bytes")),
        ("x-gzip", gzip.compress(b"real image bytes")),
        ("deflate", zlib.compress(b"real image bytes")),
        ("deflate", zlib.compress(b"real image bytes")[2:-4]),  # raw, as some servers send
        ("identity", b"real image bytes"),
    ],
)
async def test_honest_compressed_bodies_are_decoded(encoding: str, body: bytes) -> None:
    outcome = await fetch_from(send(response(200, body, {**HEAD, "Content-Encoding": encoding})))
    assert outcome == b"real image bytes"


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("br", b"\x1b\x03\x00\xf8\xa5"),
        ("gzip, gzip", gzip.compress(gzip.compress(b"nested"))),
        ("zstd", b"(\xb5/\xfd"),
        ("gzip", b"\x1f\x8b\x08\x00 definitely not gzip"),
    ],
)
async def test_unaccepted_or_corrupt_encodings_are_refused(encoding: str, body: bytes) -> None:
    outcome = await fetch_from(send(response(200, body, {**HEAD, "Content-Encoding": encoding})))
    error = failure(outcome, "bad_content_encoding")
    assert not error.retryable


# Status codes


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "retry_after"),
    [
        (503, {"Retry-After": "7"}, True, 7.0),
        (429, {"Retry-After": "120"}, True, 120.0),
        (503, {"Retry-After": "soon"}, True, None),
        (503, {"Retry-After": "inf"}, True, None),
        (503, {"Retry-After": "-5"}, True, None),
        (500, {}, True, None),
        (404, {}, False, None),
        (403, {"Retry-After": "7"}, False, 7.0),
        (410, {}, False, None),
    ],
)
async def test_http_errors_keep_their_status_and_retry_after(
    status: int, headers: dict[str, str], retryable: bool, retry_after: float | None
) -> None:
    outcome = await fetch_from(send(response(status, b"nope", headers)))
    error = failure(outcome, f"upstream_http_{status}")
    assert error.retryable is retryable
    assert error.retry_after == retry_after
    assert f"HTTP {status}" in error.message


async def test_retry_after_as_an_http_date() -> None:
    when = formatdate(time.time() + 60, usegmt=True)
    outcome = await fetch_from(send(response(503, b"", {"Retry-After": when})))
    error = failure(outcome, "upstream_http_503")
    assert error.retry_after is not None and 50 <= error.retry_after <= 61
