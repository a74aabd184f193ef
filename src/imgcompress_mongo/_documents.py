"""The documents MongoStorage keeps, and how they turn into the core's records.

Every document is flat (top-level fields only, no arrays of sub-documents), so every
change is a top-level ``$set``/``$inc``. Field names are camelCase and keep the seed's
names where the seed had them: ``requestId`` and ``status`` on a request; ``name``,
``productName``, ``requestId`` and ``contentType`` on an image (whose processed bytes
live in ``blobs`` under ``blobKey``).
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
    Output,
    RequestRecord,
    RequestStatus,
    Source,
)

__all__ = [
    "FINAL_STATUSES",
    "MAX_IMAGE_BYTES",
    "Doc",
    "delivery_doc",
    "image_docs",
    "output_doc",
    "product_docs",
    "request_doc",
    "source_doc",
    "to_delivery",
    "to_image",
    "to_output",
    "to_request",
    "to_source",
]

Doc = dict[str, Any]

# BSON documents hold at most 16 MiB; an image document keeps 1 MiB for its other fields.
MAX_IMAGE_BYTES = 15 * 1024 * 1024

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
        "policy": request.policy,
        "round": 1,
        # False until the webhook delivery exists (True at once when there is no webhook),
        # so a crash between finalizing and queueing the delivery is repaired by the sweep.
        "webhookQueued": request.webhook_url is None,
        "checkedAt": now,  # when the finalize sweep last looked at this request
        "claimedAt": 0.0,  # when a worker last claimed its images (fair turns)
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


def image_docs(request: NewRequest, now: float) -> list[Doc]:
    """Return one queued document per image."""
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
            "host": image.host,
            "state": ImageState.QUEUED.value,
            "attempts": 0,
            "notBefore": 0.0,
            "leaseOwner": None,
            "leaseToken": None,
            "leaseExpiresAt": 0.0,
            "failureCode": None,
            "failureMessage": None,
            "updatedAt": now,
        }
        for image in request.images
    ]


def delivery_doc(request: Doc, delivery_id: str, now: float) -> Doc:
    """Return the webhook delivery of a finished request."""
    return {
        "_id": delivery_id,
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
        policy=doc.get("policy", ""),
        round=doc.get("round", 1),
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
        blob_key=doc.get("blobKey"),
        output_id=doc.get("outputId"),
        reused=doc.get("reused"),
        quality=doc.get("quality"),
        score=doc.get("score"),
        warnings=tuple(doc.get("warnings") or ()),
    )


def output_doc(output: Output) -> Doc:
    """Return the document of a cached output (``_id`` is its output id)."""
    return {
        "_id": output.output_id,
        "owner": output.owner,
        "policy": output.policy,
        "inputHash": output.input_hash,
        "blobKey": output.blob_key,
        "contentType": output.content_type,
        "width": output.width,
        "height": output.height,
        "inputBytes": output.input_bytes,
        "outputBytes": output.output_bytes,
        "note": output.note,
        "quality": output.quality,
        "score": output.score,
        "warnings": list(output.warnings),
        "lastUsedAt": output.last_used_at,
    }


def to_output(doc: Doc) -> Output:
    """Return the record of an output document."""
    return Output(
        output_id=doc["_id"],
        owner=doc["owner"],
        policy=doc["policy"],
        input_hash=doc["inputHash"],
        blob_key=doc["blobKey"],
        content_type=doc["contentType"],
        width=doc["width"],
        height=doc["height"],
        input_bytes=doc["inputBytes"],
        output_bytes=doc["outputBytes"],
        note=doc.get("note"),
        quality=doc.get("quality"),
        score=doc.get("score"),
        warnings=tuple(doc.get("warnings") or ()),
        last_used_at=doc["lastUsedAt"],
    )


def source_doc(source: Source) -> Doc:
    """Return the document of a URL's last download (``_id``: owner and URL)."""
    return {
        "_id": f"{source.owner}|{source.url}",
        "owner": source.owner,
        "url": source.url,
        "inputHash": source.input_hash,
        "etag": source.etag,
        "lastModified": source.last_modified,
        "fetchedAt": source.fetched_at,
        "requestId": source.request_id,
    }


def to_source(doc: Doc) -> Source:
    """Return the record of a source document."""
    return Source(
        owner=doc["owner"],
        url=doc["url"],
        input_hash=doc["inputHash"],
        etag=doc.get("etag"),
        last_modified=doc.get("lastModified"),
        fetched_at=doc["fetchedAt"],
        request_id=doc.get("requestId", ""),
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
