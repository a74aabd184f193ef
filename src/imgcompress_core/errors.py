"""Every error imgcompress raises on purpose.

The tree::

    ImgCompressError                  code, message, retryable, retry_after
    ├── ManifestError                 a CSV that cannot be accepted; .problems lists every one
    │   └── UploadTooLarge            the CSV is over the byte cap (HTTP 413)
    ├── NotFound
    │   ├── RequestNotFound
    │   ├── ImageNotFound
    │   └── BlobNotFound
    ├── InvalidWebhookUrl             the webhook URL given at upload is not acceptable
    ├── InvalidPolicy                 an output policy option is not acceptable; .field names it
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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "ERROR_CODES",
    "BlobNotFound",
    "CompressionError",
    "FetchError",
    "IdempotencyConflict",
    "IllegalTransition",
    "ImageFailure",
    "ImageNotFound",
    "ImgCompressError",
    "InvalidPolicy",
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


class BlobNotFound(NotFound):
    """No blob has this key (it was never written, or swept)."""

    code = "blob_not_found"

    def __init__(self, key: str):
        self.key = key
        super().__init__(f"no blob with key {key!r}")


class InvalidWebhookUrl(ImgCompressError):
    """The webhook URL given with an upload is not acceptable."""

    code = "invalid_webhook_url"


class InvalidPolicy(ImgCompressError, ValueError):
    """An output policy option is not acceptable; ``field`` names the option."""

    code = "invalid_policy"

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


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


# Every stable code imgcompress produces, with what it means. ``<status>`` in a code stands
# for an HTTP status number (``upstream_http_404``). tests/unit/test_error_codes.py checks
# that every code in the source is here and that docs/api.md lists exactly these.
ERROR_CODES: Mapping[str, str] = MappingProxyType(
    {
        # Request errors: answered to an HTTP client as RFC 9457 problems.
        "imgcompress_error": "an error without a more specific code",
        "invalid_csv": "the uploaded CSV cannot be accepted; its problems list every one",
        "upload_too_large": "the CSV is larger than max_upload_bytes",
        "request_too_large": "the whole request body is larger than the server accepts",
        "too_many_form_parts": "the multipart form has more parts than the server accepts",
        "form_part_header_too_large": "a multipart part has a header line too long, or too many",
        "invalid_form": "the upload form cannot be read: not exactly one CSV file part, or a "
        "field not UTF-8",
        "invalid_host": "the Host header is not one of trusted_hosts (or public_url's host)",
        "request_timeout": "the client took longer than client_timeout or upload_deadline to "
        "send the request",
        "http_<status>": "the web framework refused the request with that HTTP status",
        "invalid_webhook_url": "the webhook URL is not http(s) or points at a non-public address",
        "invalid_policy": "an output option (format, quality, max_bytes, ...) is not acceptable; "
        "field names it",
        "not_found": "something asked for by id does not exist",
        "request_not_found": "no request has this id",
        "image_not_found": "no processed image has this id",
        "request_pending": "the output CSV was asked for while the request is still pending",
        "idempotency_key_reused": "an Idempotency-Key sent again with a different upload",
        "worker_down": "the in-process worker is not running, so nothing would be processed",
        # Image failure codes: why one image failed (the status document's error.code).
        "image_failed": "the image could not be processed (no more specific reason)",
        "download_failed": "the download failed (no more specific reason)",
        "invalid_url": "not a plain http(s) URL",
        "blocked_destination": "the host resolves to a loopback, private or non-public address",
        "dns_failure": "the host name does not resolve",
        "connection_failed": "the connection failed or was reset",
        "download_timeout": "no answer in time, or the download took longer than its deadline",
        "upstream_http_<status>": "the image server answered with that HTTP status",
        "too_many_redirects": "more than max_redirects hops, or a redirect loop",
        "source_too_large": "the image is larger than max_image_bytes",
        "bad_content_encoding": "the server compressed the body in a way we do not decode",
        "compression_failed": "decoding or encoding failed (no more specific reason)",
        "not_an_image": "the body is not an image",
        "unsupported_format": "an image format we do not decode",
        "image_too_large": "more pixels than max_image_pixels, or not enough memory to decode",
        "corrupt_image": "truncated or damaged image data",
        "too_many_frames": "an animation with more than max_animation_frames frames",
        "image_too_complex": "a progressive JPEG with more than max_jpeg_scans scans",
        "compression_crashed": "the compression process died on it (crash, memory or CPU time)",
        "max_bytes_unreachable": "even at the lowest quality the output is larger than max_bytes",
        "target_quality_unavailable": "target_quality needs the imgcompress[target] extra, "
        "which is not installed where the image was compressed",
        "output_too_large": "the compressed image does not fit the store",
        "blob_store_unavailable": "the blob store (a bucket, a directory) could not keep the image",
        "worker_lost": "the worker processing it died max_attempts times",
        "cancelled": "the request was cancelled before this image was processed",
        "internal_error": "a bug: logged with its traceback",
        # Webhook delivery codes.
        "webhook_failed": "the webhook receiver could not be reached or did not answer in time",
        "webhook_http_<status>": "the webhook receiver answered with that non-2xx HTTP status",
        # Storage codes.
        "storage_error": "the store failed to do what was asked",
        "storage_unavailable": "the store cannot be reached right now",
        "storage_conflict": "the store refused a write (a constraint was violated)",
        "storage_adapter_missing": "no storage adapter is installed for the configured URI",
        "blob_not_found": "no stored blob has this key (it was never written, or swept)",
        "lease_lost": "a worker tried to finish work it no longer holds",
        "illegal_transition": "a state change the workflow's transition table does not allow",
    }
)
