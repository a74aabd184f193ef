"""Webhook delivery: POST a finished request's event as JSON.

``WebhookNotifier`` vets the destination like any download, never follows redirects,
and treats anything but a 2xx answer as a failure. A 410 Gone means the receiver does not
want the event: that failure is not retryable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from .errors import FetchError, NotificationError
from .fetch import USER_AGENT, Resolver, check_url, system_resolver, vet_destination

__all__ = ["WebhookNotifier"]


class WebhookNotifier:
    """The production Notifier: one JSON POST per delivery attempt."""

    def __init__(
        self,
        *,
        timeout: float = 15.0,
        allow_private_networks: bool = False,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._allow_private = allow_private_networks
        self._resolver = resolver
        self._client = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def notify(self, url: str, payload: Mapping[str, Any]) -> None:
        """POST ``payload`` to ``url`` or raise NotificationError."""
        try:
            parts = check_url(url)
            await vet_destination(parts, allow_private=self._allow_private, resolver=self._resolver)
        except FetchError as exc:
            raise NotificationError(str(exc), code=exc.code, retryable=exc.retryable) from exc
        body = json.dumps(payload, separators=(",", ":")).encode()
        try:
            response = await self._client.post(
                url, content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise NotificationError(
                f"the webhook receiver could not be reached: {exc or type(exc).__name__}"
            ) from exc
        if not 200 <= response.status_code < 300:
            raise NotificationError(
                f"the webhook receiver answered HTTP {response.status_code}",
                code=f"webhook_http_{response.status_code}",
                retryable=response.status_code != 410,
            )
