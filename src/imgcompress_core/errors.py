"""Every error imgcompress raises on purpose.

The tree::

    ImgCompressError                  code, message, retryable, retry_after
    ├── ManifestError                 a CSV that cannot be accepted; .problems lists every one
    │   └── UploadTooLarge            the CSV is over the byte cap (HTTP 413)
    ├── NotFound
    │   ├── RequestNotFound
    │   └── ImageNotFound
    ├── InvalidWebhookUrl             the webhook URL given at upload is not acceptable
    ├── RequestNotFinished            the output CSV was asked for while images are still pending
    ├── IdempotencyConflict           an Idempotency-Key reused with a different upload
    ├── IllegalTransition             a state change the workflow does not allow
    ├── StorageError                  the store failed to do what was asked
    │   ├── StorageUnavailable        the store cannot be reached (retryable)
    │   └── LeaseLost                 a worker lost its claim on an image or delivery
    ├── ImageFailure                  one image could not be processed; .code says why
    │   ├── FetchError                downloading failed (timeouts, HTTP errors, blocked, too large)
    │   └── CompressionError          decoding or encoding failed (not an image, too many pixels)
    └── NotificationError             a webhook could not be delivered

Adapters translate lower-level errors into these at their edge
(``raise FetchError(...) from exc``), and the web adapter maps them to RFC 9457 problems.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CompressionError",
    "FetchError",
    "IdempotencyConflict",
    "IllegalTransition",
    "ImageFailure",
    "ImageNotFound",
    "ImgCompressError",
    "InvalidWebhookUrl",
    "LeaseLost",
    "ManifestError",
    "ManifestProblem",
    "NotFound",
    "NotificationError",
    "RequestNotFinished",
    "RequestNotFound",
    "StorageError",
    "StorageUnavailable",
    "UploadTooLarge",
]


class ImgCompressError(Exception):
    """Root of every error imgcompress raises on purpose.

    ``code`` is a stable machine-readable reason (every one is in ``ERROR_CODES``),
    ``retryable`` says whether trying again can help, and ``retry_after`` is how many
    seconds a server asked us to wait before trying again (None when it did not say).
    """

    code: str = "imgcompress_error"
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class ManifestProblem:
    """One thing wrong with an uploaded CSV, located by row and column."""

    reason: str
    row: int | None = None  # 1-based line in the file (the header is row 1); None: whole file
    column: str | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


class ManifestError(ImgCompressError):
    """The uploaded CSV cannot be accepted; ``problems`` holds every problem found."""

    code = "invalid_csv"

    def __init__(self, problems: Sequence[ManifestProblem], *, code: str | None = None):
        self.problems: tuple[ManifestProblem, ...] = tuple(problems)
        count = len(self.problems)
        head = "; ".join(str(p) for p in self.problems[:3])
        more = f" (and {count - 3} more)" if count > 3 else ""
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"the CSV has {count} {noun}: {head}{more}", code=code)


class UploadTooLarge(ManifestError):
    """The upload is over the byte cap."""

    code = "upload_too_large"

    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(
            [ManifestProblem(f"the file is larger than the {limit}-byte limit (max_upload_bytes)")]
        )


class NotFound(ImgCompressError):
    """Something asked for by id does not exist."""

    code = "not_found"


class RequestNotFound(NotFound):
    """No request has this id."""

    code = "request_not_found"

    def __init__(self, request_id: str):
        self.request_id = request_id
        super().__init__(f"no request with id {request_id!r}")


class ImageNotFound(NotFound):
    """No processed image has this id."""

    code = "image_not_found"

    def __init__(self, image_id: str):
        self.image_id = image_id
        super().__init__(f"no processed image with id {image_id!r}")


class InvalidWebhookUrl(ImgCompressError):
    """The webhook URL given with an upload is not acceptable."""

    code = "invalid_webhook_url"


class RequestNotFinished(ImgCompressError):
    """The request still has images to process, so its output is not ready."""

    code = "request_pending"
    retryable = True


class IdempotencyConflict(ImgCompressError):
    """An Idempotency-Key was already used for a different upload."""

    code = "idempotency_key_reused"

    @classmethod
    def reused(cls) -> IdempotencyConflict:
        """Return the error for a key that came back with a different upload."""
        return cls("this Idempotency-Key was already used for a different upload")


class IllegalTransition(ImgCompressError):
    """A state change that the workflow's transition table does not allow."""

    code = "illegal_transition"


class StorageError(ImgCompressError):
    """The store failed to do what was asked; subclasses say how."""

    code = "storage_error"


class LeaseLost(StorageError):
    """A worker tried to finish work it no longer holds (its lease expired or was taken over)."""

    code = "lease_lost"

    @classmethod
    def image(cls, image_id: str) -> LeaseLost:
        """Return the error for an image whose claim no longer owns it."""
        return cls(f"image {image_id} is no longer held by this claim")

    @classmethod
    def delivery(cls, delivery_id: str) -> LeaseLost:
        """Return the error for a webhook delivery whose claim no longer owns it."""
        return cls(f"delivery {delivery_id} is no longer held by this claim")


class StorageUnavailable(StorageError):
    """The store cannot be reached right now."""

    code = "storage_unavailable"
    retryable = True


class ImageFailure(ImgCompressError):
    """One image could not be processed; ``code`` is a stable machine-readable reason."""

    code = "image_failed"


class FetchError(ImageFailure):
    """Downloading failed; ``retry_after`` carries the image server's Retry-After."""

    code = "download_failed"


class CompressionError(ImageFailure):
    """Decoding or re-encoding an image failed."""

    code = "compression_failed"


class NotificationError(ImgCompressError):
    """A webhook delivery failed; ``retryable`` says whether trying again can help and
    ``retry_after`` carries the receiver's Retry-After, in seconds."""

    code = "webhook_failed"
    retryable = True
