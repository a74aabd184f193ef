"""What the service does for its own safety on the web: trusted Host headers, security
headers on every response, and a deadline on request bodies.

- **Trusted hosts.** The links the service writes (output CSVs, status documents,
  webhooks) use ``IMGCOMPRESS_PUBLIC_URL`` or, when it is unset, the request's ``Host``.
  So a request whose ``Host`` is not trusted is refused (400 ``invalid_host``) before
  anything reads it: Litestar's allowed-hosts middleware, configured by
  :class:`~litestar.config.allowed_hosts.AllowedHostsConfig`, with an entry without a port
  matching the host on any port and a problem-details answer. The health, readiness and
  metrics endpoints are exempt (probes and scrapers call them by address).
- **Security headers.** Every response gets ``X-Content-Type-Options: nosniff``,
  ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer`` and a
  ``Content-Security-Policy``: HTML pages may load scripts, styles and images from this
  service only, and nothing may frame them; anything else (images, JSON, CSV) is
  sandboxed and may load nothing (``sandbox; default-src 'none'``).
- **Body deadline.** uvicorn bounds the headers (see :mod:`.server`) but not the body: a
  client that stops half-way through an upload would hold its connection forever.
  :class:`BodyTimeoutMiddleware` bounds each wait for the next piece of the body by
  ``IMGCOMPRESS_CLIENT_TIMEOUT`` and the whole body by ``IMGCOMPRESS_UPLOAD_DEADLINE``;
  past either, the client gets 408 ``request_timeout`` and the connection is closed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import anyio
from litestar.config.allowed_hosts import AllowedHostsConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.middleware.allowed_hosts import AllowedHostsMiddleware
from litestar.response.base import ASGIResponse
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from imgcompress_core import Settings

__all__ = [
    "BodyTimeoutMiddleware",
    "RequestTimeout",
    "TrustedHostMiddleware",
    "body_timeout",
    "security_headers",
    "trusted_host_check",
    "trusted_hosts",
]

# Called by address (load balancers, Kubernetes probes, Prometheus): no link is built there.
_HOST_EXEMPT = ["^/health$", "^/ready$", "^/metrics$"]
_ALL_INTERFACES = {"0.0.0.0", "::", ""}  # noqa: S104 (recognised, not bound)

_PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'{images}; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_LOCKED_POLICY = "sandbox; default-src 'none'; frame-ancestors 'none'"
_ALWAYS = (
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def trusted_hosts(settings: Settings) -> list[str]:
    """Return the Host header values the service answers to (lower case)."""
    hosts = [h.strip().lower() for h in settings.trusted_hosts.split(",") if h.strip()]
    if not hosts:
        port = settings.port
        hosts = [f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"]
        if settings.host not in _ALL_INTERFACES:
            hosts.insert(0, _netloc(settings.host.lower(), port))
    if settings.public_url:
        public = urlsplit(settings.public_url).netloc.lower().rpartition("@")[2]
        if public:
            hosts.append(public)
    return list(dict.fromkeys(hosts))


def _host_pattern(entry: str) -> str:
    """A regex for one trusted-hosts entry: ``*.x`` is any subdomain of x; no port, any port."""
    if entry == "*":  # any well-formed host: nothing else may ever reach a link
        return r"(?:[a-z0-9_.-]+|\[[0-9a-f:.]+\])(?::\d+)?"
    has_port = re.search(r":\d+$", entry) is not None
    wildcard = entry.startswith("*.")
    name = r"(?:[a-z0-9_-]+\.)+" + re.escape(entry[2:]) if wildcard else re.escape(entry)
    return name if has_port else name + r"(?::\d+)?"


class TrustedHostMiddleware(AllowedHostsMiddleware):
    """Litestar's allowed-hosts check, case-insensitive, port-aware, answering problem details."""

    def __init__(self, app: ASGIApp, config: AllowedHostsConfig) -> None:
        """Compile the trusted hosts of ``config``."""
        super().__init__(app, config)
        patterns = [_host_pattern(host.lower()) for host in config.allowed_hosts]
        self.trusted = re.compile("|".join(f"(?:{p})" for p in patterns))
        self.redirect_domains = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on if its Host is trusted or absent, else answer 400 invalid_host.

        Without a Host header (HTTP/1.0) links use the server's own socket address, which
        the client does not choose.
        """
        host = MutableScopeHeaders(scope=scope).get("host")
        if host is None or self.trusted.fullmatch(host.lower()):
            await self.app(scope, receive, send)
            return
        problem = {
            "status": 400,
            "type": "urn:imgcompress:problem:invalid_host",
            "title": "Untrusted Host header",
            "detail": f"the Host {host[:100]!r} is not one this service answers to; set "
            "IMGCOMPRESS_TRUSTED_HOSTS (or IMGCOMPRESS_PUBLIC_URL) to the names clients use",
            "code": "invalid_host",
        }
        response = ASGIResponse(
            body=json.dumps(problem).encode(),
            status_code=400,
            media_type="application/problem+json",
        )
        await response(scope, receive, send)


def trusted_host_check(settings: Settings) -> DefineMiddleware:
    """Return the middleware that refuses requests whose Host is not trusted."""
    config = AllowedHostsConfig(
        allowed_hosts=trusted_hosts(settings), exclude=_HOST_EXEMPT, www_redirect=False
    )
    return DefineMiddleware(TrustedHostMiddleware, config=config)


def security_headers(settings: Settings) -> Callable[[Message, Scope], Awaitable[None]]:
    """Return a before-send hook that adds the security headers to every response."""
    images = ""
    if settings.public_url:
        parts = urlsplit(settings.public_url)
        images = f" {parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    page_policy = _PAGE_POLICY.format(images=images)

    async def add_headers(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        headers = MutableScopeHeaders.from_message(message)
        if "content-security-policy" not in headers:
            html = headers.get("content-type", "").lower().startswith("text/html")
            headers["content-security-policy"] = page_policy if html else _LOCKED_POLICY
        for name, value in _ALWAYS:
            if name not in headers:
                headers[name] = value

    return add_headers


class RequestTimeout(HTTPException):
    """The client was too slow sending its request: 408, and the connection is closed."""

    status_code = 408


class BodyTimeoutMiddleware:
    """Bound each wait for the request body by ``idle`` seconds and all of it by ``total``."""

    def __init__(self, app: ASGIApp, *, idle: float, total: float) -> None:
        """Wrap ``app``."""
        self.app = app
        self.idle = idle
        self.total = total

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Call the app with a ``receive`` that raises RequestTimeout when the body stalls."""
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        deadline: float | None = None
        complete = False

        async def timed_receive() -> Any:
            nonlocal deadline, complete
            if complete:  # the body is in; later calls wait for a disconnect, unbounded
                return await receive()
            now = anyio.current_time()
            if deadline is None:
                deadline = now + self.total
            try:
                with anyio.fail_after(max(0.0, min(self.idle, deadline - now))):
                    message = await receive()
            except TimeoutError:
                raise self._timeout(deadline - now <= self.idle) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, timed_receive, send)

    def _timeout(self, whole: bool) -> RequestTimeout:
        if whole:
            detail = f"the request body took longer than {self.total:g} s (upload_deadline)"
        else:
            detail = f"the request body stalled for {self.idle:g} s (client_timeout)"
        return RequestTimeout(detail=detail, headers={"Connection": "close"})


def body_timeout(settings: Settings) -> DefineMiddleware:
    """Return the middleware that bounds how long a client may take to send a body."""
    return DefineMiddleware(
        BodyTimeoutMiddleware, idle=settings.client_timeout, total=settings.upload_deadline
    )
