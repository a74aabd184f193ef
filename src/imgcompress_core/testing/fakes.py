"""Small working fakes: a hand-moved clock, a recording notifier, a fetcher from a dict."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import FetchError, NotificationError
from ..ports import Fetched

__all__ = ["FakeClock", "RecordingNotifier", "StaticFetcher"]


@dataclass
class FakeClock:
    """A clock that only moves when told to."""

    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        """Return the current fake time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


@dataclass
class RecordingNotifier:
    """A Notifier that keeps every payload it was given, per URL.

    ``fail_first`` makes the first N calls raise a retryable NotificationError.
    """

    sent: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    fail_first: int = 0
    calls: int = 0

    async def notify(self, url: str, payload: Mapping[str, Any], *, delivery_id: str) -> None:
        """Record the payload (or fail, while ``fail_first`` lasts)."""
        self.calls += 1
        if self.calls <= self.fail_first:
            raise NotificationError(f"simulated failure {self.calls}")
        self.sent.setdefault(url, []).append({**payload, "_delivery_id": delivery_id})


@dataclass
class StaticFetcher:
    """A Fetcher that serves bodies from a dict; unknown URLs fail with upstream_http_404."""

    bodies: dict[str, bytes] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)

    async def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> Fetched:
        """Return the body stored for ``url`` (its ETag is the body's hash, so a
        conditional fetch of an unchanged body answers not-modified)."""
        self.fetched.append(url)
        try:
            data = self.bodies[url]
        except KeyError:
            raise FetchError("not found", code="upstream_http_404") from None
        tag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
        if etag == tag:
            return Fetched(url, b"", None, etag=tag, not_modified=True)
        return Fetched(url, data, None, etag=tag)
