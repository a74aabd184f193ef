"""The documents MongoStorage keeps, and how they turn into the core's records.

Every document is flat (top-level fields only, no arrays of sub-documents), so every
change is a top-level ``$set``/``$inc``. Field names are camelCase and keep the seed's
names where the seed had them: ``requestId`` and ``status`` on a request; ``name``,
``productName``, ``requestId``, ``image`` and ``contentType`` on an image.
"""

from __future__ import annotations

from typing import Any

from imgcompress_core.model import (
    Delivery,
    DeliveryState,
    Failure,
    ImageRecord,
    ImageState,
    NewRequest,
    Progress,
    RequestRecord,
    RequestStatus,
)

__all__ = [
    "FINAL_STATUSES",
    "MAX_IMAGE_BYTES",
    "NO_BYTES",
    "UNFINISHED",
    "Doc",
    "delivery_doc",
    "image_docs",
    "product_docs",
    "request_doc",
    "to_delivery",
    "to_image",
    "to_progress",
    "to_request",
]

Doc = dict[str, Any]

# BSON documents hold at most 16 MiB; an image document keeps 1 MiB for its other fields.
MAX_IMAGE_BYTES = 15 * 1024 * 1024

# The projection for every image read except get_image_data: never load the bytes.
NO_BYTES: Doc = {"image": 0}

UNFINISHED = [ImageState.QUEUED.value, ImageState.WORKING.value]
FINAL_STATUSES = [RequestStatus.COMPLETED.value, RequestStatus.FAILED.value]


def request_doc(request: NewRequest, now: float) -> Doc:
    """Return the document of a new request (``_id`` and ``requestId`` are its id)."""
    return {
        "_id": request.request_id,
        "requestId": request.request_id,
        "status": RequestStatus.PENDING.value,
        "columns": list(request.columns),
        "webhookUrl": request.webhook_url,
        "createdAt": request.created_at,
        "updatedAt": now,
        "finishedAt": None,
        "totalImages": len(request.images),
        "baseUrl": request.base_url,
        "owner": request.owner,
        # False until the webhook delivery exists (True at once when there is no webhook),
        # so a crash between finalizing and queueing the delivery is repaired by the sweep.
        "webhookQueued": request.webhook_url is None,
        "checkedAt": now,  # when the finalize sweep last looked at this request
    }


def product_docs(request: NewRequest) -> list[Doc]:
    """Return one document per product row."""
    rid = request.request_id
    return [
        {
            "_id": f"{rid}:{p.row}",
            "requestId": rid,
            "row": p.row,
            "serial": p.serial,
            "name": p.name,
            "cells": list(p.cells),
        }
        for p in request.products
    ]


def image_docs(request: NewRequest, first_seq: int, now: float) -> list[Doc]:
    """Return one queued document per image; ``seq`` numbers them from ``first_seq``."""
    names = {p.row: p.name for p in request.products}
    return [
        {
            "_id": image.image_id,
            "requestId": request.request_id,
            "name": names.get(image.row, ""),
            "productName": names.get(image.row, ""),
            "row": image.row,
            "position": image.position,
            "url": image.url,
            "state": ImageState.QUEUED.value,
            "attempts": 0,
            "seq": first_seq + offset,
            "notBefore": 0.0,
            "leaseOwner": None,
            "leaseToken": None,
            "leaseExpiresAt": 0.0,
            "failureCode": None,
            "failureMessage": None,
            "updatedAt": now,
        }
        for offset, image in enumerate(request.images)
    ]


def delivery_doc(request: Doc, now: float) -> Doc:
    """Return the one webhook delivery of a finished request (its ``_id`` is fixed)."""
    return {
        "_id": f"{request['_id']}:final",
        "requestId": request["_id"],
        "url": request["webhookUrl"],
        "state": DeliveryState.PENDING.value,
        "attempts": 0,
        "nextAttemptAt": now,
        "lastError": None,
        "deliveredAt": None,
        "leaseToken": None,
        "leaseExpiresAt": 0.0,
    }


def to_request(doc: Doc) -> RequestRecord:
    """Return the record of a request document."""
    return RequestRecord(
        request_id=doc["requestId"],
        status=RequestStatus(doc["status"]),
        columns=tuple(doc["columns"]),
        webhook_url=doc.get("webhookUrl"),
        created_at=doc["createdAt"],
        updated_at=doc["updatedAt"],
        finished_at=doc.get("finishedAt"),
        total_images=doc["totalImages"],
        base_url=doc.get("baseUrl", ""),
        owner=doc.get("owner", ""),
    )


def to_image(doc: Doc) -> ImageRecord:
    """Return the record of an image document (read without its bytes)."""
    code = doc.get("failureCode")
    return ImageRecord(
        image_id=doc["_id"],
        request_id=doc["requestId"],
        row=doc["row"],
        position=doc["position"],
        url=doc["url"],
        state=ImageState(doc["state"]),
        attempts=doc["attempts"],
        failure=Failure(code, doc.get("failureMessage") or "") if code else None,
        input_bytes=doc.get("inputBytes"),
        output_bytes=doc.get("outputBytes"),
        width=doc.get("width"),
        height=doc.get("height"),
        content_type=doc.get("contentType"),
        note=doc.get("note"),
        updated_at=doc["updatedAt"],
    )


def to_delivery(doc: Doc) -> Delivery:
    """Return the record of a delivery document."""
    return Delivery(
        delivery_id=doc["_id"],
        request_id=doc["requestId"],
        url=doc["url"],
        state=DeliveryState(doc["state"]),
        attempts=doc["attempts"],
        next_attempt_at=doc["nextAttemptAt"],
        last_error=doc.get("lastError"),
        delivered_at=doc.get("deliveredAt"),
    )


def to_progress(counts: dict[str, int]) -> Progress:
    """Return a request's progress from its image counts by state."""
    return Progress(
        total=sum(counts.values()),
        queued=counts.get(ImageState.QUEUED.value, 0),
        working=counts.get(ImageState.WORKING.value, 0),
        done=counts.get(ImageState.DONE.value, 0),
        failed=counts.get(ImageState.FAILED.value, 0),
    )
