"""The outbound client that connects only to vetted addresses (private; see ``fetch``).

``GuardedClient`` sends each request straight to httpx's transport, whose connection pool
opens sockets only through ``_PinnedBackend``. Before each request the client vets the URL
(:mod:`._guard`) and stores the vetted addresses in a context variable; the backend's
``connect_tcp`` (called by httpcore in the same task, with the URL's real host name)
connects to those addresses and nothing else, and refuses outright when no pin for that
host and port is present. So DNS is asked once per hop, by us, and a second (rebinding)
answer can never be used. The URL is not rewritten, so the Host header, TLS SNI and the
certificate check all use the real host name, and the pool keeps its keep-alive
connections per real origin (scheme, host, port).
"""

from __future__ import annotations

import contextvars
import functools
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpcore
import httpx

from ._guard import Resolver, check_url, resolve_destination, system_resolver
from ._streams import CachedSocketStream
from .errors import FetchError

__all__ = ["GuardedClient"]


@dataclass(frozen=True, slots=True)
class _Pin:
    host: str
    port: int
    addresses: tuple[str, ...]


_PIN: contextvars.ContextVar[_Pin | None] = contextvars.ContextVar("imgcompress_pin", default=None)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to the addresses vetted for the current request."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        pin = _PIN.get()
        if pin is None or pin.host != host.lower() or pin.port != port:
            raise httpcore.ConnectError(f"refused to connect to unvetted {host}:{port}")
        failure: Exception | None = None
        for address in pin.addresses:
            try:
                stream = await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
                return CachedSocketStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # a pin always holds at least one address
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are never used")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, with its connection pool built on ``_PinnedBackend``."""

    def __init__(
        self,
        limits: httpx.Limits,
        ssl_context: ssl.SSLContext,
        backend: httpcore.AsyncNetworkBackend,
    ) -> None:
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        # httpx offers no network_backend argument, so replace the (unused) pool it built.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PinnedBackend(backend),
        )


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """httpx's default certificate checks (certifi's CAs), built once per process."""
    return httpx.create_ssl_context(trust_env=False)


class GuardedClient:
    """Sends single HTTP requests that only ever connect to vetted, pinned addresses.

    Requests go straight to the transport, not through ``httpx.AsyncClient.send``: no
    redirect handling (httpx parses a Location header even when not following it, and
    raises on a malformed one), no cookies, no auth, no environment.

    ``transport`` (tests) replaces the whole network stack and disables pinning;
    ``proxy`` sends everything through that proxy (which then does its own DNS, so the
    proxy is the egress control: destinations are still vetted here first);
    ``network_backend`` is where pinned sockets are opened (default: anyio's), for tests
    that map public-looking addresses to loopback listeners.
    """

    def __init__(
        self,
        *,
        timeout: httpx.Timeout,
        limits: httpx.Limits,
        allow_private_networks: bool = False,
        allowed_hosts: frozenset[str] = frozenset(),
        resolver: Resolver = system_resolver,
        proxy: str | None = None,
        headers: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allow_private_networks = allow_private_networks
        self.allowed_hosts = allowed_hosts
        self._resolver = resolver
        context = ssl_context or _default_ssl_context()
        if transport is None and proxy is not None:
            transport = httpx.AsyncHTTPTransport(
                verify=context, limits=limits, proxy=proxy, trust_env=False
            )
        elif transport is None:
            backend = network_backend or httpcore.AnyIOBackend()
            transport = _PinnedTransport(limits, context, backend)
        self._transport = transport
        self._timeout = timeout.as_dict()
        self._headers = dict(headers or {})

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._transport.aclose()

    async def vet(self, url: str | httpx.URL) -> tuple[httpx.URL, tuple[str, ...]]:
        """Parse and vet ``url``; return the parsed URL and its vetted addresses."""
        parsed = check_url(str(url))
        addresses = await resolve_destination(
            parsed,
            allow_private=self.allow_private_networks,
            resolver=self._resolver,
            allowed_hosts=self.allowed_hosts,
        )
        return parsed, addresses

    @asynccontextmanager
    async def open(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Vet ``url``, send the request pinned to the vetted addresses, yield the response.

        The body is not read; httpx transport errors (here or while the caller reads)
        become FetchError ``download_timeout`` or ``connection_failed`` (both retryable).
        """
        parsed, addresses = await self.vet(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        token = _PIN.set(_Pin(parsed.raw_host.decode("ascii").lower(), port, addresses))
        try:
            request = httpx.Request(
                method,
                parsed,
                headers={**self._headers, **(headers or {})},
                content=content,
                extensions={"timeout": self._timeout},
            )
            response = await self._transport.handle_async_request(request)
            response.request = request
            try:
                yield response
            finally:
                await response.aclose()
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
        finally:
            _PIN.reset(token)
