"""Polite fetching against a real server on loopback: the configured rate per host, a 429
with Retry-After holding the next request back, and the User-Agent sent."""

from __future__ import annotations

import time

import pytest

from imgcompress_core import FetchOptions, HttpxFetcher
from imgcompress_core.errors import FetchError
from servers import LocalServer, photo

pytestmark = pytest.mark.anyio


async def test_downloads_from_one_host_keep_to_the_rate(image_server: LocalServer) -> None:
    """At 5 requests a second, six downloads take at least a second; the User-Agent says
    who we are and how to reach us."""
    url = image_server.add("/a.jpg", photo(64, 48))
    options = FetchOptions(
        allow_private_networks=True,
        requests_per_second_per_host=5.0,
        contact_url="https://ops.example/imgcompress",
    )
    fetcher = HttpxFetcher(options)
    try:
        started = time.monotonic()
        for _ in range(6):
            await fetcher.fetch(url)
        took = time.monotonic() - started
    finally:
        await fetcher.aclose()
    assert took >= 0.95
    agent = image_server.received[0].headers["User-Agent"]
    assert agent.startswith("imgcompress/") and "https://ops.example/imgcompress" in agent


async def test_a_429_with_retry_after_holds_the_host_back(image_server: LocalServer) -> None:
    """A 429 with Retry-After: 1 is retryable, and the next request to that host starts
    no sooner than a second later."""
    url = image_server.script(
        "/busy.jpg",
        [
            (429, {"Retry-After": "1"}, b"slow down"),
            (200, {"Content-Type": "image/jpeg"}, photo(64, 48)),
        ],
    )
    fetcher = HttpxFetcher(
        FetchOptions(allow_private_networks=True, requests_per_second_per_host=100)
    )
    try:
        with pytest.raises(FetchError) as refused:
            await fetcher.fetch(url)
        assert refused.value.retryable and refused.value.retry_after == 1.0
        started = time.monotonic()
        fetched = await fetcher.fetch(url)
        waited = time.monotonic() - started
    finally:
        await fetcher.aclose()
    assert fetched.data and waited >= 0.9


async def test_a_conditional_download_of_an_unchanged_image_has_no_body(
    image_server: LocalServer,
) -> None:
    """With the ETag of the last download, an unchanged image answers 304: not_modified,
    no body."""
    url = image_server.add("/e.jpg", photo(64, 48), headers={"ETag": '"e1"'})
    fetcher = HttpxFetcher(FetchOptions(allow_private_networks=True))
    try:
        first = await fetcher.fetch(url)
        again = await fetcher.fetch(url, etag=first.etag)
    finally:
        await fetcher.aclose()
    assert first.etag == '"e1"' and first.data and not first.not_modified
    assert again.not_modified and again.data == b""
