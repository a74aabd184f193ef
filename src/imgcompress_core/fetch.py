"""Downloading with httpx: vetted destinations, capped bytes, time limits, typed failures.

``HttpxFetcher`` is the production ``Fetcher``. For every URL, and again for every
redirect hop (followed by hand), it checks the scheme, refuses user info, resolves the
host and refuses the download if ANY address it resolves to is not globally routable
(loopback, private, link-local, CGNAT, multicast, reserved, unspecified) unless
``allow_private_networks`` is set. Bytes are counted as they are read, after any
content decoding, so neither a lying Content-Length nor a gzip bomb can pass the cap;
an overall deadline cuts off a server that drips bytes slowly.

Every failure is a :class:`~imgcompress_core.errors.FetchError` with a stable ``code``:
``invalid_url``, ``blocked_destination``, ``dns_failure``, ``connection_failed``,
``download_timeout``, ``too_many_redirects``, ``source_too_large``,
``upstream_http_<status>``. ``retryable`` says whether trying again can help.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import SplitResult, urljoin, urlsplit

import anyio
import httpx

from .errors import FetchError
from .ports import Fetched

__all__ = [
    "FetchOptions",
    "HttpxFetcher",
    "Resolver",
    "check_url",
    "is_public_address",
    "system_resolver",
    "vet_destination",
]

USER_AGENT = "imgcompress/0.1 (+https://github.com/imgcompress)"

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """Resolve ``host`` with the system resolver, returning every address."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


def is_public_address(address: str) -> bool:
    """Return True if ``address`` is globally routable (and not a cloud metadata endpoint)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast and ip not in _METADATA


def check_url(url: str) -> SplitResult:
    """Return the parsed URL, or raise FetchError(invalid_url) unless it is plain http(s)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # a malformed port raises here
    except ValueError as exc:
        raise FetchError(f"not a valid URL: {exc}", code="invalid_url") from exc
    if parts.scheme not in ("http", "https"):
        raise FetchError("only http and https URLs can be fetched", code="invalid_url")
    if not parts.hostname:
        raise FetchError("the URL has no host name", code="invalid_url")
    if parts.username is not None or parts.password is not None:
        raise FetchError("URLs with a user name or password are refused", code="invalid_url")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise FetchError("the URL contains spaces or control characters", code="invalid_url")
    return parts


async def vet_destination(
    parts: SplitResult, *, allow_private: bool, resolver: Resolver = system_resolver
) -> None:
    """Raise FetchError(blocked_destination) if the URL's host resolves anywhere non-public."""
    if allow_private:
        return
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = list(await resolver(host, port))
        except OSError as exc:
            raise FetchError(
                f"the host name {host!r} could not be resolved", code="dns_failure", retryable=True
            ) from exc
    if not addresses:
        raise FetchError(f"the host name {host!r} has no addresses", code="dns_failure")
    blocked = [a for a in addresses if not is_public_address(a)]
    if blocked:
        raise FetchError(
            f"{host!r} resolves to a non-public address ({blocked[0]}); private, loopback and "
            "link-local destinations are refused (allow_private_networks is off)",
            code="blocked_destination",
        )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """Limits for one download."""

    allow_private_networks: bool = False
    max_bytes: int = 25 * 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    deadline: float = 60.0
    max_redirects: int = 5
    max_connections: int = 16
    connections_per_host: int = 8


_REDIRECTS = {301, 302, 303, 307, 308}


class HttpxFetcher:
    """The production Fetcher: one pooled httpx client with vetted, capped downloads."""

    def __init__(
        self,
        options: FetchOptions = FetchOptions(),
        *,
        resolver: Resolver = system_resolver,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.options = options
        self._resolver = resolver
        self._client = httpx.AsyncClient(
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
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": USER_AGENT, "Accept": "image/*"},
            transport=transport,
        )
        self._per_host: dict[str, anyio.Semaphore] = {}

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def fetch(self, url: str) -> Fetched:
        """Download ``url`` (following vetted redirects) or raise FetchError."""
        try:
            with anyio.fail_after(self.options.deadline):
                return await self._follow(url)
        except TimeoutError as exc:
            raise FetchError(
                f"the download took longer than {self.options.deadline:g} s (download_deadline)",
                code="download_timeout",
                retryable=True,
            ) from exc

    async def _follow(self, url: str) -> Fetched:
        current = url
        for _hop in range(self.options.max_redirects + 1):
            parts = check_url(current)
            await vet_destination(
                parts, allow_private=self.options.allow_private_networks, resolver=self._resolver
            )
            host = parts.netloc.lower()
            gate = self._per_host.setdefault(
                host, anyio.Semaphore(self.options.connections_per_host)
            )
            async with gate:
                result = await self._get(current)
            if isinstance(result, Fetched):
                return result
            current = result
        raise FetchError(
            f"more than {self.options.max_redirects} redirects (max_redirects)",
            code="too_many_redirects",
        )

    async def _get(self, url: str) -> Fetched | str:
        """Return the body, or the next URL when the answer is a redirect."""
        try:
            async with self._client.stream("GET", url) as response:
                if response.status_code in _REDIRECTS:
                    location: str | None = response.headers.get("location")
                    if not location:
                        raise FetchError(
                            f"redirect {response.status_code} without a Location header",
                            code=f"upstream_http_{response.status_code}",
                        )
                    return str(urljoin(url, location))
                self._check_status(response)
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.options.max_bytes:
                    raise self._too_large()
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self.options.max_bytes:
                        raise self._too_large()
                content_type: str | None = response.headers.get("content-type")
                return Fetched(url=url, data=bytes(body), content_type=content_type)
        except httpx.TimeoutException as exc:
            raise FetchError(
                f"the server did not answer in time ({type(exc).__name__})",
                code="download_timeout",
                retryable=True,
            ) from exc
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise FetchError(
                f"the connection failed: {exc or type(exc).__name__}",
                code="connection_failed",
                retryable=True,
            ) from exc

    def _check_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        raise FetchError(
            f"the image server answered HTTP {status}",
            code=f"upstream_http_{status}",
            retryable=status >= 500 or status in (408, 425, 429),
            retry_after=_retry_after(response.headers.get("retry-after")),
        )

    def _too_large(self) -> FetchError:
        return FetchError(
            f"the image is larger than {self.options.max_bytes} bytes (max_image_bytes)",
            code="source_too_large",
        )
