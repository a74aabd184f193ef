"""The records imgcompress keeps: requests, products, images and webhook deliveries.

Everything here is a plain frozen dataclass so that every store (memory, SQLite, MongoDB)
returns the same shapes; the rules about how states change live in :mod:`.workflow`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Blob",
    "Claim",
    "Delivery",
    "DeliveryClaim",
    "DeliveryOutcome",
    "DeliveryState",
    "Failure",
    "ImageChange",
    "ImageRecord",
    "ImageResult",
    "ImageState",
    "KeyHolder",
    "NewImage",
    "NewProduct",
    "NewRequest",
    "Output",
    "ProductRecord",
    "Progress",
    "RequestRecord",
    "RequestStatus",
    "Source",
    "StoredImage",
    "new_id",
]


def new_id() -> str:
    """Return a fresh unguessable id (128 random bits, URL-safe)."""
    return secrets.token_urlsafe(16)


class RequestStatus(StrEnum):
    """A request's status, the seed's enum: Pending until every image is final."""

    PENDING = "Pending"
    COMPLETED = "Completed"
    FAILED = "Failed"


class ImageState(StrEnum):
    """Where one image is in its life: queued -> working -> done | failed (or back to queued)."""

    QUEUED = "queued"
    WORKING = "working"
    DONE = "done"
    FAILED = "failed"


class DeliveryState(StrEnum):
    """A webhook delivery: pending until delivered or given up on."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Failure:
    """Why something failed: a stable machine-readable code and a sentence for people."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class NewProduct:
    """A product row of an accepted CSV, as handed to storage."""

    row: int
    serial: str
    name: str
    cells: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NewImage:
    """An image to process, as handed to storage."""

    image_id: str
    row: int
    position: int
    url: str
    host: str = ""  # where it is downloaded from (workflow.host_of), for per-host shares


@dataclass(frozen=True, slots=True)
class NewRequest:
    """An accepted upload: the request, its products and its images."""

    request_id: str
    columns: tuple[str, ...]
    webhook_url: str | None
    created_at: float
    products: tuple[NewProduct, ...]
    images: tuple[NewImage, ...]
    base_url: str = ""  # public base URL for the links written about this request
    idempotency_key: str | None = None  # a client's Idempotency-Key header
    body_hash: str = ""  # what the key was used with (the CSV and webhook URL)
    owner: str = ""  # who created it (an API key's fingerprint); "" when the API is open
    policy: str = ""  # the output policy, canonical JSON ("": the service's defaults)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """A request as stored."""

    request_id: str
    status: RequestStatus
    columns: tuple[str, ...]
    webhook_url: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    total_images: int
    base_url: str = ""
    owner: str = ""
    policy: str = ""
    round: int = 1  # how many times it was processed (a retry of failed images adds one)


@dataclass(frozen=True, slots=True)
class ProductRecord:
    """A product row as stored."""

    request_id: str
    row: int
    serial: str
    name: str
    cells: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """An image as stored: where it came from, where it is, and what came of it."""

    image_id: str
    request_id: str
    row: int
    position: int
    url: str
    state: ImageState
    attempts: int
    failure: Failure | None = None
    input_bytes: int | None = None
    output_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    content_type: str | None = None
    note: str | None = None
    updated_at: float = 0.0
    blob_key: str | None = None  # the processed bytes in the blob store, once done
    output_id: str | None = None  # the stable id of its output (the same for the same input)
    reused: str | None = None  # "not-modified" or "same-content" when nothing was redone
    quality: int | None = None  # the encoder quality used
    score: float | None = None  # the perceptual score reached, when a target was asked for
    warnings: tuple[str, ...] = ()  # store rules the image breaks (presets)


@dataclass(frozen=True, slots=True)
class Progress:
    """How many of a request's images are in each state."""

    total: int = 0
    queued: int = 0
    working: int = 0
    done: int = 0
    failed: int = 0

    @property
    def finished(self) -> int:
        """Images that reached a final state."""
        return self.done + self.failed


@dataclass(frozen=True, slots=True)
class Claim:
    """A worker's lease on one image; ``token`` fences out a worker whose lease was taken."""

    image_id: str
    request_id: str
    url: str
    attempt: int
    token: str


@dataclass(frozen=True, slots=True)
class ImageResult:
    """A processed image ready to be stored."""

    data: bytes
    content_type: str
    width: int
    height: int
    input_bytes: int
    note: str | None = None
    quality: int | None = None
    score: float | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Output:
    """A processed image as the reuse cache keeps it: what one input (its bytes' hash)
    became under one policy for one owner. ``output_id`` is random, so links cannot be
    guessed from the input, and stable, so the same input always gets the same link."""

    output_id: str
    owner: str
    policy: str
    input_hash: str
    blob_key: str
    content_type: str
    width: int
    height: int
    input_bytes: int
    output_bytes: int
    note: str | None = None
    quality: int | None = None
    score: float | None = None
    warnings: tuple[str, ...] = ()
    last_used_at: float = 0.0  # when an image last took it (the sweep spares recent ones)


@dataclass(frozen=True, slots=True)
class Source:
    """What the last download of a URL (for one owner) answered: its validators for a
    conditional re-fetch, and the hash of the bytes it gave."""

    owner: str
    url: str
    input_hash: str
    etag: str | None
    last_modified: str | None
    fetched_at: float
    request_id: str = ""  # the request whose download this was


@dataclass(frozen=True, slots=True)
class ImageChange:
    """What a finished step writes onto an image besides its new state.

    ``output`` (and ``reused``) come with ``done``; ``failure`` with ``failed`` (and, as
    the last error, with a retry); ``not_before`` with a retry.
    """

    failure: Failure | None = None
    not_before: float = 0.0
    output: Output | None = None
    reused: str | None = None


@dataclass(frozen=True, slots=True)
class KeyHolder:
    """The request that already holds an Idempotency-Key, and what it was used with."""

    request_id: str
    body_hash: str


@dataclass(frozen=True, slots=True)
class Blob:
    """Bytes in the blob store, keyed by the SHA-256 of the bytes."""

    key: str
    data: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class StoredImage:
    """A processed image's bytes and the headers to serve it with."""

    image_id: str
    data: bytes
    content_type: str
    etag: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """A webhook delivery as stored (one per finished request that has a webhook URL)."""

    delivery_id: str
    request_id: str
    url: str
    state: DeliveryState
    attempts: int
    next_attempt_at: float
    last_error: str | None = None
    delivered_at: float | None = None


@dataclass(frozen=True, slots=True)
class DeliveryClaim:
    """A worker's lease on one webhook delivery."""

    delivery_id: str
    request_id: str
    url: str
    attempt: int
    token: str


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What one delivery attempt leaves behind (decided by the workflow)."""

    state: DeliveryState
    last_error: str | None
    delivered_at: float | None
    next_attempt_at: float
