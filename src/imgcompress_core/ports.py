"""The ports: what the core needs from the outside world, as Protocols.

Adapters match these by shape (mypy checks it); nothing here knows SQLite, MongoDB,
httpx or Litestar. Every ``Storage`` must pass :mod:`imgcompress_core.testing`'s
contract suite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .model import (
    Claim,
    Delivery,
    DeliveryClaim,
    Failure,
    ImageRecord,
    ImageResult,
    NewRequest,
    ProductRecord,
    Progress,
    RequestRecord,
    StoredImage,
)

__all__ = ["Fetched", "Fetcher", "Metrics", "Notifier", "NullMetrics", "Storage"]


@runtime_checkable
class Storage(Protocol):
    """Durable state: requests, products, images (with their bytes) and webhook deliveries.

    Every state change is a conditional update, so any number of workers in any number
    of processes may share one store. Methods that finish claimed work take the claim
    and raise LeaseLost when its token no longer owns the item.
    """

    async def open(self) -> None:
        """Connect and create what the store needs (tables, indexes); idempotent."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the store answers."""
        ...

    async def create_request(self, request: NewRequest) -> str:
        """Store a request with its products and queued images, all or nothing; return its id.

        With an ``idempotency_key`` already used for the same ``body_hash``, store nothing
        and return the earlier request's id; with a different body raise
        IdempotencyConflict.
        """
        ...

    async def get_request(self, request_id: str) -> RequestRecord:
        """Return a request or raise RequestNotFound."""
        ...

    async def list_products(self, request_id: str) -> list[ProductRecord]:
        """Return a request's products in row order."""
        ...

    async def list_images(self, request_id: str) -> list[ImageRecord]:
        """Return a request's images ordered by row, then position."""
        ...

    async def progress(self, request_id: str) -> Progress:
        """Count a request's images by state."""
        ...

    async def claim_images(
        self, owner: str, limit: int, lease_seconds: float, max_attempts: int
    ) -> list[Claim]:
        """Atomically lease up to ``limit`` claimable images, oldest first.

        Images whose lease expired (their worker died) come before queued ones; an expired
        image that already had ``max_attempts`` attempts is failed (``worker_lost``)
        instead of being handed out again.
        """
        ...

    async def renew_claims(self, claims: Sequence[Claim], lease_seconds: float) -> list[Claim]:
        """Extend the leases still held by these claims; return those (lost ones are left out)."""
        ...

    async def complete_image(self, claim: Claim, result: ImageResult) -> None:
        """Store a processed image and mark it done (idempotent for the same claim)."""
        ...

    async def fail_image(self, claim: Claim, failure: Failure) -> None:
        """Mark a claimed image failed for good with its reason."""
        ...

    async def retry_image(self, claim: Claim, failure: Failure, not_before: float) -> None:
        """Put a claimed image back in the queue, not to be claimed before ``not_before``."""
        ...

    async def finalize_request(self, request_id: str) -> RequestRecord | None:
        """Set the final status once every image is final; return it only to the one caller
        that made the change (exactly once), queueing the webhook delivery in the same step.
        """
        ...

    async def unfinalized_requests(self, limit: int) -> list[str]:
        """Return ids of Pending requests whose images are all final (a finalize was lost)."""
        ...

    async def queue_depth(self) -> int:
        """Count images waiting to be claimed, across all requests."""
        ...

    async def cancel_request(self, request_id: str) -> None:
        """Fail every unfinished image of a request with ``cancelled`` (their claims die)."""
        ...

    async def delete_request(self, request_id: str) -> None:
        """Remove a request with its products, images, image bytes and deliveries."""
        ...

    async def finished_before(self, cutoff: float, limit: int) -> list[str]:
        """Return ids of final requests that finished before ``cutoff`` (for retention)."""
        ...

    async def get_image_data(self, image_id: str) -> StoredImage:
        """Return a processed image's bytes or raise ImageNotFound."""
        ...

    async def claim_deliveries(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[DeliveryClaim]:
        """Atomically lease up to ``limit`` webhook deliveries that are due."""
        ...

    async def record_delivery(
        self,
        claim: DeliveryClaim,
        *,
        delivered: bool,
        error: str | None,
        next_attempt_at: float | None,
    ) -> None:
        """Record one delivery attempt: delivered, retry at ``next_attempt_at``, or give up."""
        ...

    async def list_deliveries(self, request_id: str) -> list[Delivery]:
        """Return a request's webhook deliveries."""
        ...


@runtime_checkable
class Notifier(Protocol):
    """Sends a finished request's event to its webhook URL."""

    async def notify(self, url: str, payload: Mapping[str, Any], *, delivery_id: str) -> None:
        """Deliver ``payload`` to ``url`` or raise NotificationError; ``delivery_id`` is the
        same for every attempt of one delivery (receivers use it to drop duplicates)."""
        ...


@dataclass(frozen=True, slots=True)
class Fetched:
    """A downloaded body."""

    url: str
    data: bytes
    content_type: str | None


@runtime_checkable
class Fetcher(Protocol):
    """Downloads an image (and vets where it may connect)."""

    async def fetch(self, url: str) -> Fetched:
        """Return the body at ``url`` or raise FetchError with a stable code."""
        ...


@runtime_checkable
class Metrics(Protocol):
    """Receives what the worker observes (counts and durations), e.g. for Prometheus."""

    def image_done(self, input_bytes: int, output_bytes: int) -> None:
        """An image was compressed and stored."""
        ...

    def image_failed(self, code: str) -> None:
        """An image failed for good with this reason code."""
        ...

    def fetch_seconds(self, seconds: float) -> None:
        """A download took this long (successful or not)."""
        ...

    def compress_seconds(self, seconds: float) -> None:
        """Decoding and re-encoding one image took this long."""
        ...

    def request_finished(self, status: str) -> None:
        """A request reached its final status."""
        ...


class NullMetrics:
    """Metrics that go nowhere (the default)."""

    def image_done(self, input_bytes: int, output_bytes: int) -> None:
        """Ignore."""

    def image_failed(self, code: str) -> None:
        """Ignore."""

    def fetch_seconds(self, seconds: float) -> None:
        """Ignore."""

    def compress_seconds(self, seconds: float) -> None:
        """Ignore."""

    def request_finished(self, status: str) -> None:
        """Ignore."""
