"""Webhook delivery: POST a finished request's event as JSON.

``WebhookNotifier`` goes through the same guard as downloads (``fetch.GuardedClient``):
one URL parser, the destination resolved once and refused if any address is not public
(unless ``allow_private_networks``), the socket pinned to the vetted address, no
environment proxies, no cookies. It never follows redirects, never reads the receiver's
answer body, gives the whole POST ``timeout`` seconds, and treats anything but a 2xx
answer as a failure. A 410 Gone means the receiver does not want the event: that failure
is not retryable; nor are refused destinations (``invalid_url``, ``blocked_destination``).
A ``Retry-After`` on the answer is passed on so the next attempt waits at least that long.

With a secret, every delivery is signed the Standard Webhooks way
(https://www.standardwebhooks.com): ``webhook-id`` (the same for every retry of one
delivery), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature:
v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``. A secret written
``whsec_<base64>`` is used as the base64-decoded bytes, as the specification says;
any other secret as its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import time
from collections.abc import Mapping
from typing import Any

import anyio
import httpcore
import httpx

from .errors import FetchError, NotificationError
from .fetch import USER_AGENT, GuardedClient, Resolver, retry_after_seconds, system_resolver

__all__ = ["WebhookNotifier", "sign_webhook", "webhook_key"]


def webhook_key(secret: str) -> bytes:
    """Return the HMAC key for a secret (``whsec_``-prefixed secrets are base64)."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def sign_webhook(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` header value for one delivery."""
    message = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(webhook_key(secret), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


_TRANSPORT_CODES = frozenset({"connection_failed", "download_timeout"})


class WebhookNotifier:
    """The production Notifier: one guarded JSON POST per delivery attempt."""

    def __init__(
        self,
        *,
        timeout: float = 15.0,
        secret: str | None = None,
        allow_private_networks: bool = False,
        allowed_hosts: frozenset[str] = frozenset(),
        proxy: str | None = None,
        resolver: Resolver = system_resolver,
        transport: httpx.AsyncBaseTransport | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._timeout = timeout
        self._secret = secret
        self._guard = GuardedClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
            allow_private_networks=allow_private_networks,
            allowed_hosts=allowed_hosts,
            resolver=resolver,
            proxy=proxy,
            headers={"User-Agent": USER_AGENT},
            ssl_context=ssl_context,
            transport=transport,
            network_backend=network_backend,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._guard.aclose()

    async def notify(self, url: str, payload: Mapping[str, Any], *, delivery_id: str) -> None:
        """POST ``payload`` to ``url`` (signed when there is a secret) or raise
        NotificationError."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": delivery_id,
            "webhook-timestamp": str(timestamp),
        }
        if self._secret:
            headers["webhook-signature"] = sign_webhook(self._secret, delivery_id, timestamp, body)
        try:
            with anyio.fail_after(self._timeout):
                async with self._guard.open("POST", url, content=body, headers=headers) as answer:
                    status = answer.status_code
                    retry_after = retry_after_seconds(answer.headers.get("retry-after"))
        except TimeoutError as exc:
            raise NotificationError(
                f"the webhook receiver did not answer within {self._timeout:g} s (webhook_timeout)"
            ) from exc
        except FetchError as exc:
            if exc.code in _TRANSPORT_CODES:
                raise NotificationError(
                    f"the webhook receiver could not be reached: {exc}"
                ) from exc
            raise NotificationError(str(exc), code=exc.code, retryable=exc.retryable) from exc
        if not 200 <= status < 300:
            raise NotificationError(
                f"the webhook receiver answered HTTP {status}",
                code=f"webhook_http_{status}",
                retryable=status != 410,
                retry_after=retry_after,
            )
