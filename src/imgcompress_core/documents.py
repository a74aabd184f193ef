"""What the API writes about a request: its public URLs, the status document (one page of
products with their images), and the webhook's payload."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .model import (
    Delivery,
    ImageRecord,
    ImageState,
    ProductRecord,
    Progress,
    RequestRecord,
)

__all__ = [
    "ImageLink",
    "StatusReport",
    "Urls",
    "iso_time",
    "output_url",
    "webhook_payload",
]

_FORMATS = {"image/jpeg": "jpeg", "image/webp": "webp", "image/avif": "avif"}
_FORMATS.update({"image/png": "png", "image/gif": "gif"})

# A done image's direct address (IMGCOMPRESS_BLOB_PUBLIC_URL), or None: /api/images/{id}.
ImageLink = Callable[[ImageRecord], str | None]


@dataclass(frozen=True, slots=True)
class Urls:
    """Builds the public URLs written into status documents, output CSVs and webhooks."""

    base: str

    def image(self, image_id: str) -> str:
        """Return the URL of a processed image."""
        return f"{self.base}/api/images/{image_id}"

    def output_csv(self, request_id: str) -> str:
        """Return the URL of a request's output CSV."""
        return f"{self.base}/api/requests/{request_id}/output.csv"

    def status(self, request_id: str) -> str:
        """Return the URL of a request's status."""
        return f"{self.base}/api/status/{request_id}"


def iso_time(timestamp: float | None) -> str | None:
    """Return a Unix time as the API writes it (ISO 8601, UTC, ``Z``); None stays None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class StatusReport:
    """Everything known about one request."""

    request: RequestRecord
    progress: Progress
    products: list[ProductRecord]
    images: list[ImageRecord]
    deliveries: list[Delivery]
    detail: bool = True  # False: products and images were not read (a progress poll)
    next_cursor: int | None = None  # the row to continue after, when there are more products
    image_link: ImageLink | None = None  # direct links to a CDN or public bucket, if any

    def to_document(self, urls: Urls) -> dict[str, Any]:
        """Render the status as the JSON document the API returns (without ``products``
        when the report was made without detail)."""
        by_row: dict[int, list[dict[str, Any]]] = {}
        for image in self.images:
            by_row.setdefault(image.row, []).append(_image_document(image, urls, self.image_link))
        p = self.progress
        document: dict[str, Any] = {
            "requestId": self.request.request_id,
            "status": self.request.status.value,
            "progress": {
                "total": p.total,
                "queued": p.queued,
                "working": p.working,
                "done": p.done,
                "failed": p.failed,
                "finished": p.finished,
                "percent": round(100 * p.finished / p.total, 1) if p.total else 100.0,
            },
            "createdAt": iso_time(self.request.created_at),
            "finishedAt": iso_time(self.request.finished_at),
            "outputCsvUrl": urls.output_csv(self.request.request_id),
            "products": [
                {
                    "row": product.row,
                    "serial": product.serial,
                    "name": product.name,
                    "images": by_row.get(product.row, []),
                }
                for product in self.products
            ],
            "webhook": None
            if self.request.webhook_url is None
            else {
                "url": self.request.webhook_url,
                "deliveries": [
                    {
                        "state": d.state.value,
                        "attempts": d.attempts,
                        "lastError": d.last_error,
                        "deliveredAt": iso_time(d.delivered_at),
                    }
                    for d in self.deliveries
                ],
            },
        }
        if not self.detail:
            del document["products"]
        elif self.next_cursor is not None:  # more products follow this page
            document["nextCursor"] = self.next_cursor
        return document


def output_url(
    image: ImageRecord, image_url: Callable[[str], str], link: ImageLink | None
) -> str | None:
    """Return where a done image is: its direct link if it has one, else ``image_url``'s."""
    if image.state is not ImageState.DONE:
        return None
    direct = link(image) if link is not None else None
    # The output's id: the same for the same input and policy, so links stay stable
    # across feeds (an image id for outputs made before the reuse cache).
    return direct or image_url(image.output_id or image.image_id)


def _image_document(image: ImageRecord, urls: Urls, link: ImageLink | None) -> dict[str, Any]:
    return {
        "imageId": image.image_id,
        "position": image.position,
        "inputUrl": image.url,
        "state": image.state.value,
        "attempts": image.attempts,
        "outputUrl": output_url(image, urls.image, link),
        "reused": image.reused,
        "inputBytes": image.input_bytes,
        "outputBytes": image.output_bytes,
        "width": image.width,
        "height": image.height,
        "contentType": image.content_type,
        "format": _FORMATS.get(image.content_type or ""),
        "quality": image.quality,
        "score": image.score,
        "warnings": list(image.warnings),
        "note": image.note,
        "error": None
        if image.failure is None
        else {"code": image.failure.code, "message": image.failure.message},
    }


def webhook_payload(request: RequestRecord, progress: Progress, urls: Urls) -> dict[str, Any]:
    """Return the JSON body sent to a request's webhook when it finishes."""
    return {
        "requestId": request.request_id,
        "status": request.status.value,
        "total": progress.total,
        "done": progress.done,
        "failed": progress.failed,
        "finishedAt": iso_time(request.finished_at),
        "statusUrl": urls.status(request.request_id),
        "outputCsvUrl": urls.output_csv(request.request_id),
    }
