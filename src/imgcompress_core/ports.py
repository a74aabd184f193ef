"""The ports: what the core needs from the outside world, as Protocols.

Adapters match these by shape (mypy checks it); nothing here knows SQLite, MongoDB,
httpx or Litestar. Storage is split by role, each port small:

- :class:`RequestStore`: requests, products and images as records (create, read,
  finalize, cancel, delete, retention);
- :class:`ImageQueue`: leasing images to workers and finishing them;
- :class:`DeliveryQueue`: leasing webhook deliveries and recording attempts;
- :class:`BlobStore`: the processed bytes, content-addressed.

Stores only persist and make the conditional updates atomicity needs; every rule (which
state may follow which, what an expired lease means, what a request ends as, ids and
ETags, messages) lives in :mod:`.workflow`, which is the only caller of these ports.
Every store passes :mod:`imgcompress_core.testing`'s contract suite and model test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .model import (
    Blob,
    Claim,
    Delivery,
    DeliveryClaim,
    DeliveryOutcome,
    Failure,
    ImageChange,
    ImageRecord,
    ImageState,
    KeyHolder,
    NewRequest,
    Output,
    ProductRecord,
    RequestRecord,
    RequestStatus,
    Source,
)

__all__ = [
    "BlobStore",
    "DeliveryQueue",
    "Fetched",
    "Fetcher",
    "ImageQueue",
    "Lifecycle",
    "Metrics",
    "Notifier",
    "NullMetrics",
    "RequestStore",
    "ReuseCache",
    "Storage",
]


@runtime_checkable
class Lifecycle(Protocol):
    """Opening, closing and checking a connection to a store."""

    async def open(self) -> None:
        """Connect and create what the store needs (tables, indexes); idempotent."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the store answers."""
        ...


@runtime_checkable
class RequestStore(Lifecycle, Protocol):
    """Requests with their products and images: created, read, finalized, removed."""

    async def create_request(self, request: NewRequest) -> KeyHolder | None:
        """Store a request with its products and queued images, all or nothing.

        When its ``idempotency_key`` is already held, store nothing and return the holder.
        """
        ...

    async def get_request(self, request_id: str) -> RequestRecord:
        """Return a request or raise RequestNotFound."""
        ...

    async def list_requests(
        self, owner: str | None, before: tuple[float, str] | None, limit: int
    ) -> list[RequestRecord]:
        """Return up to ``limit`` requests, newest first (by creation time, then id), those
        older than ``before`` (a (created_at, request_id) cursor); only ``owner``'s unless
        it is None."""
        ...

    async def list_products(
        self, request_id: str, *, after_row: int = 0, limit: int | None = None
    ) -> list[ProductRecord]:
        """Return a request's products in row order, those after ``after_row``, at most
        ``limit`` (RequestNotFound if there is no such request)."""
        ...

    async def list_images(
        self, request_id: str, *, rows: tuple[int, int] | None = None
    ) -> list[ImageRecord]:
        """Return a request's images by row, then position; with ``rows``, only those of
        rows ``first`` to ``last`` inclusive (RequestNotFound if there is no request)."""
        ...

    async def get_image(self, image_id: str) -> ImageRecord:
        """Return one image or raise ImageNotFound."""
        ...

    async def count_images(self, request_id: str) -> Mapping[ImageState, int]:
        """Count a request's images by state (RequestNotFound if there is none)."""
        ...

    async def has_images_in(self, request_id: str, states: frozenset[ImageState]) -> bool:
        """Return True if any of a request's images is in one of ``states`` (a cheap probe)."""
        ...

    async def finalize_request(
        self, request_id: str, status: RequestStatus, now: float, delivery_id: str | None
    ) -> RequestRecord | None:
        """Move a Pending request to ``status`` and queue its webhook delivery (when
        ``delivery_id`` is given) in the same step; return the record only to the caller
        whose update made the change. A delivery with that id is created at most once."""
        ...

    async def unfinalized_requests(self, limit: int, now: float) -> list[str]:
        """Return ids of Pending requests that may be final by now (a finalize was lost),
        least recently looked at first."""
        ...

    async def reopen_request(self, request_id: str, keep_codes: frozenset[str], now: float) -> int:
        """If the request is final and has failed images whose code is not in
        ``keep_codes``, make it Pending again (its ``round`` one more) and queue those
        images afresh (no attempts, no lease); return how many were queued (0: nothing
        changed)."""
        ...

    async def cancel_images(
        self, request_id: str, states: frozenset[ImageState], failure: Failure, now: float
    ) -> None:
        """Fail every image of a request that is in ``states`` with ``failure`` (their
        claims die)."""
        ...

    async def delete_request(self, request_id: str) -> None:
        """Remove a request with its products, images, deliveries and Idempotency-Key (its
        blobs stay until the sweep finds nothing references them)."""
        ...

    async def finished_before(self, cutoff: float, limit: int) -> list[str]:
        """Return ids of final requests that finished before ``cutoff`` (for retention)."""
        ...

    async def referenced_blobs(self, keys: Sequence[str]) -> set[str]:
        """Return those of ``keys`` that some image or cached output still references."""
        ...


@runtime_checkable
class ReuseCache(Protocol):
    """What was downloaded and produced before, so the same work is never done twice:
    each URL's validators (conditional re-fetch) and each input's output (content cache),
    per owner."""

    async def get_source(self, owner: str, url: str) -> Source | None:
        """Return what the last download of ``url`` for ``owner`` answered, if any."""
        ...

    async def recall(
        self, owner: str, url: str, policy: str, now: float
    ) -> tuple[Source | None, Output | None]:
        """Return what the last download of ``url`` for ``owner`` answered and, if its
        bytes became an output under ``policy``, that output (marked used ``now``): both
        in one call, as the worker asks for them before every download."""
        ...

    async def put_source(self, source: Source) -> None:
        """Record (or replace) what the last download of a URL answered."""
        ...

    async def find_output(
        self, owner: str, policy: str, input_hash: str, now: float
    ) -> Output | None:
        """Return the output an input became under a policy for an owner, if any, marking
        it used ``now``."""
        ...

    async def get_output(self, output_id: str) -> Output | None:
        """Return an output by its id, if any."""
        ...

    async def output_in_use(self, output_id: str) -> bool:
        """Return True if some image references this output."""
        ...

    async def add_output(self, output: Output) -> Output:
        """Keep ``output`` unless one exists for its (owner, policy, input hash); return the
        one kept (so racing workers agree on one id)."""
        ...

    async def delete_unreferenced_outputs(self, used_before: float, limit: int) -> int:
        """Delete up to ``limit`` outputs last used before ``used_before`` that no image
        references, with the sources that led only to them; return how many went."""
        ...


@runtime_checkable
class ImageQueue(Protocol):
    """Images waiting to be processed, leased to workers with fencing tokens."""

    async def expire_leases(self, now: float, max_attempts: int, failure: Failure) -> None:
        """Fail with ``failure`` every working image whose lease expired after
        ``max_attempts`` attempts."""
        ...

    async def claimable_requests(
        self, now: float, limit: int, skip_hosts: frozenset[str]
    ) -> list[tuple[str, str]]:
        """Return (request id, owner) pairs of Pending requests that have an image to claim
        (queued and due, or leased and expired) whose host is not in ``skip_hosts``: per
        owner, up to ``limit`` of them, least recently claimed first."""
        ...

    async def claim_images(
        self,
        request_id: str,
        worker: str,
        limit: int,
        *,
        now: float,
        lease_seconds: float,
        max_attempts: int,
        skip_hosts: frozenset[str] = frozenset(),
    ) -> list[Claim]:
        """Atomically lease up to ``limit`` of one request's images whose host is not in
        ``skip_hosts`` (expired leases with fewer than ``max_attempts`` attempts first,
        then due queued images, in row and position order) and mark the request as
        claimed at ``now``."""
        ...

    async def renew_claims(self, claims: Sequence[Claim], expires_at: float) -> list[Claim]:
        """Extend the leases still held by these claims; return those (lost ones left out)."""
        ...

    async def finish_image(
        self,
        claim: Claim,
        target: ImageState,
        sources: frozenset[ImageState],
        change: ImageChange,
        now: float,
    ) -> tuple[ImageState, str | None] | None:
        """Move a claimed image to ``target`` if it is in ``sources`` and the claim's token
        still owns it, writing ``change``; return None if it moved, else the image's state
        and lease token as they are (None: no such image)."""
        ...

    async def queue_depth(self) -> int:
        """Count images waiting to be claimed, across all requests."""
        ...


@runtime_checkable
class DeliveryQueue(Protocol):
    """Webhook deliveries of finished requests, leased like images."""

    async def claim_deliveries(
        self, worker: str, limit: int, *, now: float, lease_seconds: float
    ) -> list[DeliveryClaim]:
        """Atomically lease up to ``limit`` pending deliveries that are due."""
        ...

    async def record_delivery(self, claim: DeliveryClaim, outcome: DeliveryOutcome) -> None:
        """Record one attempt's outcome; raise LeaseLost unless the claim still holds it."""
        ...

    async def list_deliveries(self, request_id: str) -> list[Delivery]:
        """Return a request's webhook deliveries, oldest first."""
        ...


@runtime_checkable
class BlobStore(Protocol):
    """Processed image bytes under content-addressed keys (the SHA-256 of the bytes).

    Writing the same bytes twice keeps one copy. ``put_blob`` comes before the image is
    marked done with the key, so a crash in between leaves an unreferenced blob, which
    :meth:`~.workflow.Workflow.sweep_blobs` removes after a grace period.
    """

    async def put_blob(self, key: str, data: bytes, content_type: str, now: float) -> None:
        """Store ``data`` under ``key`` (or keep the copy there), stamped as written ``now``."""
        ...

    async def get_blob(self, key: str) -> Blob:
        """Return a blob or raise BlobNotFound."""
        ...

    async def blobs_written_before(self, cutoff: float, after: str, limit: int) -> list[str]:
        """Return up to ``limit`` keys greater than ``after``, in key order, of blobs last
        written before ``cutoff`` (candidates for the sweep)."""
        ...

    async def delete_blobs(self, keys: Sequence[str], written_before: float) -> None:
        """Delete these blobs unless one was written again at or after ``written_before``."""
        ...


@runtime_checkable
class Storage(RequestStore, ImageQueue, DeliveryQueue, BlobStore, ReuseCache, Protocol):
    """A store that plays every role (memory, SQLite and MongoDB do; blobs may be moved
    elsewhere by giving the workflow another BlobStore)."""


@runtime_checkable
class Notifier(Protocol):
    """Sends a finished request's event to its webhook URL."""

    async def notify(self, url: str, payload: Mapping[str, Any], *, delivery_id: str) -> None:
        """Deliver ``payload`` to ``url`` or raise NotificationError; ``delivery_id`` is the
        same for every attempt of one delivery (receivers use it to drop duplicates)."""
        ...


@dataclass(frozen=True, slots=True)
class Fetched:
    """A downloaded body, with the validators to fetch it conditionally next time;
    ``not_modified``: a conditional download found it unchanged (no body)."""

    url: str
    data: bytes
    content_type: str | None
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False


@runtime_checkable
class Fetcher(Protocol):
    """Downloads an image (and vets where it may connect)."""

    async def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> Fetched:
        """Return the body at ``url`` or raise FetchError with a stable code; with ``etag``
        or ``last_modified`` the request is conditional (``not_modified`` when unchanged)."""
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
