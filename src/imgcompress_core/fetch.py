"""Downloading with httpx: vetted and pinned destinations, capped bytes, time limits.

``HttpxFetcher`` is the production ``Fetcher``. For the URL, and again for every
redirect hop (followed by hand, at most ``max_redirects``), it:

1. parses the URL once with ``httpx.URL`` (:func:`check_url`) and refuses anything but
   plain ``http``/``https`` with a DNS name or canonical IP literal: no user info, no
   empty, percent-encoded or oddly-written numeric hosts, no control characters;
2. refuses a host missing from ``allowed_hosts`` when that allow-list is not empty (1 and
   2, and an IP literal's address, are :func:`check_destination`: the rules that need no
   DNS, which an upload's image URLs are held to as well);
3. resolves the host once with the injectable resolver and refuses the hop if ANY
   address is not globally routable (loopback, private, link-local, CGNAT, multicast,
   reserved, unspecified, their IPv4-mapped/compatible/6to4/NAT64 forms, Teredo) or is
   a cloud metadata endpoint (:func:`resolve_destination`); ``allow_private_networks``
   admits the non-global unicast ranges, never metadata;
4. connects to exactly those vetted addresses (DNS pinning): the connection pool opens
   sockets only through a network backend that reads the vetted addresses from a
   context variable set for this request, and refuses any connection it has no pin
   for. The URL is not rewritten, so the Host header, TLS SNI and the certificate check
   use the real host name, and keep-alive pooling works per real origin. See
   ``_guard.py``.

Environment proxies are ignored (``trust_env=False``) unless ``FetchOptions.proxy`` is
set; through a proxy, destinations are still vetted but the proxy resolves names again,
so it must enforce egress itself. Cookies are never stored. ``Accept-Encoding:
identity`` is sent; a server that compresses anyway (gzip or deflate) is decoded here
with a bounded inflater, and ``max_bytes`` applies both to the bytes read from the wire
and to the bytes after decoding, so neither a lying Content-Length nor a gzip bomb gets
past it. Connect and read timeouts apply per operation and ``deadline`` to the whole
download, including DNS and redirects, so a server dripping bytes is cut off.

Every failure is a :class:`~imgcompress_core.errors.FetchError` with a stable ``code``:
``invalid_url``, ``blocked_destination``, ``dns_failure``, ``connection_failed``,
``download_timeout``, ``too_many_redirects``, ``source_too_large``,
``bad_content_encoding``, ``upstream_http_<status>``. ``retryable`` says whether trying
again can help (timeouts, connection failures, DNS errors, HTTP 408/425/429/5xx).
"""

from __future__ import annotations

import ssl
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import anyio
import httpcore
import httpx

from ._guard import (
    Resolver,
    check_destination,
    check_url,
    host_allowed,
    is_public_address,
    odd_character,
    refusal_reason,
    resolve_destination,
    system_resolver,
    vet_destination,
)
from ._pinned import GuardedClient
from ._polite import HostPacer
from ._version import __version__
from .errors import FetchError
from .ports import Fetched

__all__ = [
    "USER_AGENT",
    "FetchOptions",
    "GuardedClient",
    "HttpxFetcher",
    "Resolver",
    "check_destination",
    "check_url",
    "host_allowed",
    "is_public_address",
    "refusal_reason",
    "resolve_destination",
    "retry_after_seconds",
    "system_resolver",
    "vet_destination",
]

USER_AGENT = f"imgcompress/{__version__}"


def user_agent(contact_url: str | None) -> str:
    """Return the User-Agent downloads are made with: ``imgcompress/<version>``, plus a
    contact URL when one is configured (so a site owner can reach the operator)."""
    return f"{USER_AGENT} (+{contact_url})" if contact_url else USER_AGENT


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """Limits for one download, and the only two ways to relax the destination rules."""

    allow_private_networks: bool = False
    max_bytes: int = 25 * 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    deadline: float = 60.0
    max_redirects: int = 5
    max_connections: int = 16
    requests_per_second_per_host: float = 20.0  # 0: no limit; halved while a host pushes back
    contact_url: str | None = None  # added to the User-Agent
    connections_per_host: int = 8
    allowed_hosts: frozenset[str] = frozenset()  # non-empty: only these (``*.x`` allowed)
    proxy: str | None = None  # explicit proxy URL; environment proxies are never used


_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRYABLE_STATUS = frozenset({408, 425, 429})


def retry_after_seconds(value: str | None) -> float | None:
    """Parse Retry-After: delay-seconds or an HTTP date; None if absent or malformed."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


@dataclass(slots=True)
class _Gate:
    semaphore: anyio.Semaphore
    users: int = 0


class _Inflater:
    """Decode gzip or deflate without ever producing more than the cap allows."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        self._z = zlib.decompressobj(31 if self._gzip else 15)
        self._started = False

    def feed(self, data: bytes, body: bytearray, cap: int) -> None:
        while data and not self._z.eof:
            try:
                out = self._z.decompress(data, cap - len(body) + 1)
            except zlib.error as exc:
                if self._started or self._gzip:
                    raise _bad_encoding(f"the compressed body is corrupt ({exc})") from exc
                self._z = zlib.decompressobj(-15)  # "deflate" sent without its zlib header
                self._started = True
                continue
            self._started = True
            body += out
            if len(body) > cap:
                raise _too_large(cap)
            data = self._z.unconsumed_tail


def _bad_encoding(reason: str) -> FetchError:
    return FetchError(reason, code="bad_content_encoding")


def _too_large(cap: int) -> FetchError:
    return FetchError(
        f"the image is larger than {cap} bytes (max_image_bytes)", code="source_too_large"
    )


class HttpxFetcher:
    """The production Fetcher: one pinned, pooled httpx client with vetted, capped downloads.

    ``resolver`` answers DNS questions (tests inject fakes); ``transport`` replaces the
    network stack entirely (tests only: no pinning); ``network_backend`` is where pinned
    sockets are opened; ``ssl_context`` replaces the default certificate checks (for a
    private CA).
    """

    def __init__(
        self,
        options: FetchOptions = FetchOptions(),
        *,
        resolver: Resolver = system_resolver,
        transport: httpx.AsyncBaseTransport | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.options = options
        self._guard = GuardedClient(
            timeout=httpx.Timeout(
                connect=options.connect_timeout,
                read=options.read_timeout,
                write=options.read_timeout,
                pool=options.deadline,
            ),
            limits=httpx.Limits(
                max_connections=options.max_connections,
                max_keepalive_connections=options.max_connections,
            ),
            allow_private_networks=options.allow_private_networks,
            allowed_hosts=options.allowed_hosts,
            resolver=resolver,
            proxy=options.proxy,
            headers={
                "User-Agent": user_agent(options.contact_url),
                "Accept": "image/*",
                "Accept-Encoding": "identity",
            },
            ssl_context=ssl_context,
            transport=transport,
            network_backend=network_backend,
        )
        self._per_host: dict[str, _Gate] = {}
        self._pacer = HostPacer(options.requests_per_second_per_host)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._guard.aclose()

    async def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> Fetched:
        """Download ``url`` (following vetted redirects) or raise FetchError.

        With ``etag`` or ``last_modified`` (from an earlier download) the request is
        conditional: a 304 answer gives a ``not_modified`` Fetched with no body.
        ``deadline`` counts the time spent talking to servers, not the time spent waiting
        for a free connection to a busy host or for the host's polite turn.
        """
        validators = {}
        if etag:
            validators["If-None-Match"] = etag
        if last_modified:
            validators["If-Modified-Since"] = last_modified
        parsed = check_destination(
            url,
            allow_private=self.options.allow_private_networks,
            allowed_hosts=self.options.allowed_hosts,
        )
        seen = {str(parsed)}
        left = self.options.deadline
        for _hop in range(self.options.max_redirects + 1):
            async with self._gate(parsed.netloc.decode("ascii")):
                await self._pacer.turn(parsed.host)
                started = time.monotonic()
                try:
                    with anyio.fail_after(left):
                        result = await self._get(parsed, validators)
                except TimeoutError as exc:
                    raise FetchError(
                        f"the download took longer than {self.options.deadline:g} s "
                        "(download_deadline)",
                        code="download_timeout",
                        retryable=True,
                    ) from exc
                left -= time.monotonic() - started
            if isinstance(result, Fetched):
                return result
            if str(result) in seen:
                raise FetchError(
                    f"redirect loop: {parsed} redirects back to {result}",
                    code="too_many_redirects",
                )
            seen.add(str(result))
            parsed = result
        raise FetchError(
            f"more than {self.options.max_redirects} redirects (max_redirects)",
            code="too_many_redirects",
        )

    @asynccontextmanager
    async def _gate(self, key: str) -> AsyncIterator[None]:
        """At most ``connections_per_host`` downloads from one host at a time."""
        gate = self._per_host.get(key)
        if gate is None:
            gate = self._per_host[key] = _Gate(anyio.Semaphore(self.options.connections_per_host))
        gate.users += 1
        try:
            async with gate.semaphore:
                yield
        finally:
            gate.users -= 1
            if gate.users == 0:
                del self._per_host[key]

    async def _get(self, url: httpx.URL, validators: Mapping[str, str]) -> Fetched | httpx.URL:
        """Return the body, or the next (checked) URL when the answer is a redirect."""
        async with self._guard.open("GET", url, headers=validators) as response:
            status = response.status_code
            etag, modified = response.headers.get("etag"), response.headers.get("last-modified")
            if status in _REDIRECTS:
                return _redirect_target(url, status, response.headers.get("location"))
            if status == 304 and validators:
                self._pacer.answered(url.host)
                # A 304 has no body; reading it to its end lets the connection be reused
                # (closing an unread response closes the connection).
                async for _ in response.aiter_raw():
                    break
                return Fetched(
                    str(url), b"", None, etag=etag, last_modified=modified, not_modified=True
                )
            if not 200 <= status < 300:
                retry_after = retry_after_seconds(response.headers.get("retry-after"))
                if status in (429, 503):
                    self._pacer.pushed_back(url.host, retry_after)
                raise FetchError(
                    f"the image server answered HTTP {status}",
                    code=f"upstream_http_{status}",
                    retryable=status >= 500 or status in _RETRYABLE_STATUS,
                    retry_after=retry_after,
                )
            self._pacer.answered(url.host)
            data = await self._read(response)
            content_type: str | None = response.headers.get("content-type")
            return Fetched(str(url), data, content_type, etag=etag, last_modified=modified)

    async def _read(self, response: httpx.Response) -> bytes:
        """Read the body, counting wire bytes and decoded bytes against ``max_bytes``."""
        cap = self.options.max_bytes
        declared = response.headers.get("content-length", "").strip()
        if declared.isascii() and declared.isdigit() and int(declared) > cap:
            raise _too_large(cap)
        encoding = response.headers.get("content-encoding", "").strip().lower()
        inflater: _Inflater | None = None
        if encoding in ("gzip", "x-gzip", "deflate"):
            inflater = _Inflater(encoding)
        elif encoding not in ("", "identity"):
            raise _bad_encoding(
                f"the server sent the body with Content-Encoding {encoding!r}, which is not "
                "accepted (identity, gzip and deflate are)"
            )
        chunks: list[bytes] = []  # joined once at the end: one copy of the body
        inflated = bytearray()
        wire = 0
        async for chunk in response.aiter_raw():
            wire += len(chunk)
            if wire > cap:
                raise _too_large(cap)
            if inflater is None:
                chunks.append(chunk)
            else:
                inflater.feed(chunk, inflated, cap)
        return b"".join(chunks) if inflater is None else bytes(inflated)


def _redirect_target(base: httpx.URL, status: int, location: str | None) -> httpx.URL:
    """Resolve a Location header against ``base`` and check it like any URL."""
    if not location:
        raise FetchError(
            f"redirect {status} without a Location header", code=f"upstream_http_{status}"
        )
    try:
        odd = odd_character(location)
        if odd is not None:
            raise ValueError(f"it contains the character {odd}")
        target = check_url(str(base.join(location)))
    except (FetchError, httpx.InvalidURL, ValueError) as exc:
        raise FetchError(
            f"the server redirected to {location[:200]!r}, which is refused: {exc}",
            code="invalid_url",
        ) from exc
    return target
