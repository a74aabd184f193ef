"""``MongoStorage``: the core's Storage protocol on MongoDB, with pymongo's async client.

Documents are flat, one per request, product, image and webhook delivery; every change
is a top-level ``$set``/``$inc`` on one document, conditional on the state it starts
from, so any number of web and worker processes on any number of machines can share
one database (and nothing grows without bound inside a document).

Collections (the seed's field names are kept: ``requests`` has ``requestId`` and
``status``; ``images`` has ``name``, ``image``, ``contentType``, ``productName`` and
``requestId``):

- ``requests``: ``_id`` = requestId, status, counts, timestamps, ``finalized`` flags.
- ``products``: ``_id`` = ``<requestId>:<row>``, the row's cells for the output CSV.
- ``images``: ``_id`` = imageId; state, lease (``leaseToken``, ``leaseExpiresAt``),
  attempts, failure, sizes, and the processed bytes in ``image`` (BSON binary) once done.
- ``deliveries``: ``_id`` = ``<requestId>:final``: at most one webhook delivery per
  request, whoever tries to create it.

Claims are ``find_one_and_update`` calls, one image each, so two workers never get the
same image. Finalizing is idempotent and safe to race: the status changes with a
conditional update that only one caller can win, and the delivery has a deterministic
id. A crash between steps is repaired by ``unfinalized_requests``, which the worker's
sweep calls.

An image whose processed bytes do not fit in one document (over 15 MiB, leaving room
under BSON's 16 MiB) is refused: ``complete_image`` raises ``ImageFailure`` with code
``output_too_large`` and the worker records that as the image's failure. (Outputs are
never larger than their input, so this needs an input over 15 MiB that barely
compresses.)

Writes use majority write concern and pymongo's retryable writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError
from pymongo.read_concern import ReadConcern
from pymongo.uri_parser import parse_uri
from pymongo.write_concern import WriteConcern

from imgcompress_core.errors import (
    IdempotencyConflict,
    ImageFailure,
    ImageNotFound,
    LeaseLost,
    RequestNotFound,
    StorageUnavailable,
)
from imgcompress_core.model import (
    Claim,
    Delivery,
    DeliveryClaim,
    DeliveryState,
    Failure,
    ImageRecord,
    ImageResult,
    ImageState,
    NewRequest,
    ProductRecord,
    Progress,
    RequestRecord,
    RequestStatus,
    StoredImage,
    new_id,
)
from imgcompress_core.settings import Settings
from imgcompress_core.workflow import (
    CANCELLED,
    WORKER_LOST,
    check_transition,
    delivery_outcome,
    final_status,
)

from ._errors import translated

__all__ = ["MAX_IMAGE_BYTES", "MongoStorage", "create_storage"]

Doc = dict[str, Any]
MAX_IMAGE_BYTES = 15 * 1024 * 1024
_ACTIVE = [ImageState.QUEUED.value, ImageState.WORKING.value]
_NO_BYTES = {"image": 0}


def create_storage(settings: Settings) -> MongoStorage:
    """Build the store from settings (the ``imgcompress.storage`` entry point)."""
    assert settings.mongodb_uri is not None
    return MongoStorage(settings.mongodb_uri)


def _request(doc: Doc) -> RequestRecord:
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


def _image(doc: Doc) -> ImageRecord:
    failure = Failure(doc["failureCode"], doc["failureMessage"]) if doc.get("failureCode") else None
    return ImageRecord(
        image_id=doc["_id"],
        request_id=doc["requestId"],
        row=doc["row"],
        position=doc["position"],
        url=doc["url"],
        state=ImageState(doc["state"]),
        attempts=doc["attempts"],
        failure=failure,
        input_bytes=doc.get("inputBytes"),
        output_bytes=doc.get("outputBytes"),
        width=doc.get("width"),
        height=doc.get("height"),
        content_type=doc.get("contentType"),
        note=doc.get("note"),
        updated_at=doc["updatedAt"],
    )


def _delivery(doc: Doc) -> Delivery:
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


class MongoStorage:
    """Storage on MongoDB: flat documents, conditional updates, leases with fencing tokens."""

    def __init__(
        self,
        uri: str,
        *,
        database: str | None = None,
        clock: Callable[[], float] = time.time,
        client: AsyncMongoClient[Doc] | None = None,
    ) -> None:
        self.uri = uri
        self.database_name = database or parse_uri(uri).get("database") or "imgcompress"
        self._clock = clock
        self._client = client
        self._owns_client = client is None
        self._db: AsyncDatabase[Doc] | None = None

    # -- plumbing ---------------------------------------------------------------------

    def _col(self, name: str) -> AsyncCollection[Doc]:
        if self._db is None:
            raise StorageUnavailable("the MongoDB store is not open")
        return self._db.get_collection(name)

    async def open(self) -> None:
        """Connect and create the indexes (idempotent)."""
        if self._client is None:
            self._client = AsyncMongoClient(self.uri, retryWrites=True, tz_aware=False)
        self._db = self._client.get_database(
            self.database_name,
            write_concern=WriteConcern(w="majority"),
            read_concern=ReadConcern("majority"),
        )
        async with translated("creating indexes"):
            requests = self._col("requests")
            await requests.create_index([("requestId", ASCENDING)], unique=True)
            await requests.create_index([("status", ASCENDING), ("checkedAt", ASCENDING)])
            await requests.create_index([("finalized", ASCENDING), ("webhookQueued", ASCENDING)])
            await self._col("products").create_index([("requestId", ASCENDING), ("row", ASCENDING)])
            images = self._col("images")
            await images.create_index(
                [("requestId", ASCENDING), ("row", ASCENDING), ("position", ASCENDING)]
            )
            await images.create_index([("requestId", ASCENDING), ("state", ASCENDING)])
            await images.create_index(
                [("state", ASCENDING), ("queuedAt", ASCENDING), ("order", ASCENDING)]
            )
            await images.create_index([("state", ASCENDING), ("leaseExpiresAt", ASCENDING)])
            deliveries = self._col("deliveries")
            await deliveries.create_index([("state", ASCENDING), ("nextAttemptAt", ASCENDING)])
            await deliveries.create_index([("requestId", ASCENDING)])
            await self._col("idempotency").create_index([("requestId", ASCENDING)])

    async def close(self) -> None:
        """Close the client if this store created it."""
        if self._client is not None and self._owns_client:
            await self._client.close()
            self._client = None
        self._db = None

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the server answers."""
        async with translated("ping"):
            if self._db is None:
                raise StorageUnavailable("the MongoDB store is not open")
            await self._db.command("ping")

    # -- requests ---------------------------------------------------------------------

    async def create_request(self, request: NewRequest) -> str:
        """Store the products and images first, then the request that makes them visible.

        An Idempotency-Key is claimed first (a document whose ``_id`` is the key): whoever
        inserts it creates the request; a repeat returns the owner's id.
        """
        now = self._clock()
        rid = request.request_id
        if request.idempotency_key is not None:
            owner = await self._claim_key(request)
            if owner != rid:
                return owner
        names = {p.row: p.name for p in request.products}
        # Claim order: ObjectIds rise with time (and within a process), so their hex does too.
        batch = str(ObjectId())
        async with translated("storing a request"):
            if request.products:
                await self._col("products").insert_many(
                    [
                        {
                            "_id": f"{rid}:{p.row}",
                            "requestId": rid,
                            "row": p.row,
                            "serial": p.serial,
                            "name": p.name,
                            "cells": list(p.cells),
                        }
                        for p in request.products
                    ],
                    ordered=False,
                )
            if request.images:
                await self._col("images").insert_many(
                    [
                        {
                            "_id": i.image_id,
                            "requestId": rid,
                            "name": names.get(i.row, ""),
                            "productName": names.get(i.row, ""),
                            "row": i.row,
                            "position": i.position,
                            "url": i.url,
                            "state": ImageState.QUEUED.value,
                            "attempts": 0,
                            "queuedAt": batch,
                            "order": order,
                            "notBefore": 0.0,
                            "leaseExpiresAt": 0.0,
                            "leaseToken": None,
                            "updatedAt": now,
                        }
                        for order, i in enumerate(request.images)
                    ],
                    ordered=False,
                )
            await self._col("requests").insert_one(
                {
                    "_id": rid,
                    "requestId": rid,
                    "status": RequestStatus.PENDING.value,
                    "columns": list(request.columns),
                    "webhookUrl": request.webhook_url,
                    "createdAt": request.created_at,
                    "updatedAt": now,
                    "finishedAt": None,
                    "totalImages": len(request.images),
                    "baseUrl": request.base_url,
                    "owner": request.owner,
                    "finalized": False,
                    "webhookQueued": request.webhook_url is None,
                    "checkedAt": now,
                }
            )
        return rid

    async def _claim_key(self, request: NewRequest) -> str:
        """Insert the key's document, or return the id of the request that owns it."""
        keys = self._col("idempotency")
        async with translated("checking an Idempotency-Key"):
            try:
                await keys.insert_one(
                    {
                        "_id": request.idempotency_key,
                        "requestId": request.request_id,
                        "bodyHash": request.body_hash,
                    }
                )
                return request.request_id
            except DuplicateKeyError:
                earlier = await keys.find_one({"_id": request.idempotency_key})
        if earlier is None:  # deleted in between: try once more
            return await self._claim_key(request)
        if earlier["bodyHash"] != request.body_hash:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used for a different upload"
            )
        return str(earlier["requestId"])

    async def _request_doc(self, request_id: str) -> Doc:
        async with translated("reading a request"):
            doc = await self._col("requests").find_one({"_id": request_id})
        if doc is None:
            raise RequestNotFound(request_id)
        return doc

    async def get_request(self, request_id: str) -> RequestRecord:
        """Return a request or raise RequestNotFound."""
        return _request(await self._request_doc(request_id))

    async def list_products(self, request_id: str) -> list[ProductRecord]:
        """Return a request's products in row order."""
        await self._request_doc(request_id)
        async with translated("reading products"):
            cursor = self._col("products").find({"requestId": request_id}).sort("row", ASCENDING)
            docs = await cursor.to_list()
        return [
            ProductRecord(request_id, d["row"], d["serial"], d["name"], tuple(d["cells"]))
            for d in docs
        ]

    async def list_images(self, request_id: str) -> list[ImageRecord]:
        """Return a request's images by row and position (never their bytes)."""
        await self._request_doc(request_id)
        async with translated("reading images"):
            cursor = (
                self._col("images")
                .find({"requestId": request_id}, projection=_NO_BYTES)
                .sort([("row", ASCENDING), ("position", ASCENDING)])
            )
            return [_image(d) for d in await cursor.to_list()]

    async def _counts(self, request_id: str) -> Progress:
        pipeline: list[Doc] = [
            {"$match": {"requestId": request_id}},
            {"$group": {"_id": "$state", "n": {"$sum": 1}}},
        ]
        async with translated("counting images"):
            cursor = await self._col("images").aggregate(pipeline)
            counts = {d["_id"]: d["n"] for d in await cursor.to_list()}
        return Progress(
            total=sum(counts.values()),
            queued=counts.get(ImageState.QUEUED.value, 0),
            working=counts.get(ImageState.WORKING.value, 0),
            done=counts.get(ImageState.DONE.value, 0),
            failed=counts.get(ImageState.FAILED.value, 0),
        )

    async def progress(self, request_id: str) -> Progress:
        """Count a request's images by state."""
        await self._request_doc(request_id)
        return await self._counts(request_id)

    # -- claims -----------------------------------------------------------------------

    async def claim_images(
        self, owner: str, limit: int, lease_seconds: float, max_attempts: int
    ) -> list[Claim]:
        """Lease up to ``limit`` images, one atomic find_one_and_update each."""
        now = self._clock()
        images = self._col("images")
        async with translated("claiming images"):
            await images.update_many(
                {
                    "state": ImageState.WORKING.value,
                    "leaseExpiresAt": {"$lte": now},
                    "attempts": {"$gte": max_attempts},
                },
                {
                    "$set": {
                        "state": ImageState.FAILED.value,
                        "failureCode": WORKER_LOST.code,
                        "failureMessage": WORKER_LOST.message,
                        "leaseToken": None,
                        "updatedAt": now,
                    }
                },
            )
            token = new_id()
            update = {
                "$set": {
                    "state": ImageState.WORKING.value,
                    "leaseOwner": owner,
                    "leaseToken": token,
                    "leaseExpiresAt": now + lease_seconds,
                    "updatedAt": now,
                },
                "$inc": {"attempts": 1},
            }
            expired: Doc = {"state": ImageState.WORKING.value, "leaseExpiresAt": {"$lte": now}}
            queued: Doc = {"state": ImageState.QUEUED.value, "notBefore": {"$lte": now}}
            order = [("queuedAt", ASCENDING), ("order", ASCENDING)]
            claims: list[Claim] = []
            for query in (expired, queued):
                while len(claims) < limit:
                    doc = await images.find_one_and_update(
                        query,
                        update,
                        sort=order,
                        projection=_NO_BYTES,
                        return_document=ReturnDocument.AFTER,
                    )
                    if doc is None:
                        break
                    claims.append(
                        Claim(doc["_id"], doc["requestId"], doc["url"], doc["attempts"], token)
                    )
        return claims

    async def renew_claims(self, claims: Sequence[Claim], lease_seconds: float) -> list[Claim]:
        """Extend the leases these claims still hold; return those."""
        expires = self._clock() + lease_seconds
        held = []
        async with translated("renewing leases"):
            for claim in claims:
                result = await self._col("images").update_one(
                    {
                        "_id": claim.image_id,
                        "leaseToken": claim.token,
                        "state": ImageState.WORKING.value,
                    },
                    {"$set": {"leaseExpiresAt": expires}},
                )
                if result.matched_count == 1:
                    held.append(claim)
        return held

    async def _finish(self, claim: Claim, target: ImageState, fields: Doc) -> bool:
        """Move a claimed image to ``target``; False if it already is there by this claim."""
        fields = {**fields, "state": target.value, "updatedAt": self._clock()}
        if target is ImageState.QUEUED:
            fields["leaseToken"] = None
        async with translated("updating an image"):
            result = await self._col("images").update_one(
                {
                    "_id": claim.image_id,
                    "leaseToken": claim.token,
                    "state": ImageState.WORKING.value,
                },
                {"$set": fields},
            )
            if result.matched_count == 1:
                return True
            doc = await self._col("images").find_one({"_id": claim.image_id}, projection=_NO_BYTES)
        if doc is None or doc.get("leaseToken") != claim.token:
            raise LeaseLost(f"image {claim.image_id} is no longer held by this claim")
        if target is ImageState.DONE and doc["state"] == ImageState.DONE.value:
            return False  # the same claim finishing twice: already done
        check_transition(ImageState(doc["state"]), target)
        raise LeaseLost(f"image {claim.image_id} changed while it was being updated")

    async def complete_image(self, claim: Claim, result: ImageResult) -> None:
        """Store the processed bytes and mark the image done, in one conditional update."""
        if len(result.data) > MAX_IMAGE_BYTES:
            raise ImageFailure(
                f"the compressed image is {len(result.data)} bytes; MongoDB documents hold at "
                f"most {MAX_IMAGE_BYTES} bytes of image",
                code="output_too_large",
            )
        await self._finish(
            claim,
            ImageState.DONE,
            {
                "image": result.data,
                "contentType": result.content_type,
                "etag": hashlib.sha256(result.data).hexdigest()[:32],
                "inputBytes": result.input_bytes,
                "outputBytes": len(result.data),
                "width": result.width,
                "height": result.height,
                "note": result.note,
                "failureCode": None,
                "failureMessage": None,
            },
        )

    async def fail_image(self, claim: Claim, failure: Failure) -> None:
        """Mark the image failed for good."""
        fields = {"failureCode": failure.code, "failureMessage": failure.message}
        await self._finish(claim, ImageState.FAILED, fields)

    async def retry_image(self, claim: Claim, failure: Failure, not_before: float) -> None:
        """Queue the image again after ``not_before``."""
        fields = {
            "failureCode": failure.code,
            "failureMessage": failure.message,
            "notBefore": not_before,
        }
        await self._finish(claim, ImageState.QUEUED, fields)

    # -- finalizing -------------------------------------------------------------------

    async def _unfinished(self, request_id: str) -> bool:
        async with translated("counting unfinished images"):
            count = await self._col("images").count_documents(
                {"requestId": request_id, "state": {"$in": _ACTIVE}}, limit=1
            )
        return count > 0

    async def finalize_request(self, request_id: str) -> RequestRecord | None:
        """Set the final status once (one conditional update wins), then queue the webhook."""
        doc = await self._request_doc(request_id)
        won = None
        if doc["status"] == RequestStatus.PENDING.value:
            if await self._unfinished(request_id):
                return None
            status = final_status(await self._counts(request_id))
            assert status is not None
            now = self._clock()
            async with translated("finalizing a request"):
                won = await self._col("requests").find_one_and_update(
                    {"_id": request_id, "status": RequestStatus.PENDING.value},
                    {
                        "$set": {
                            "status": status.value,
                            "finalized": True,
                            "updatedAt": now,
                            "finishedAt": now,
                        }
                    },
                    return_document=ReturnDocument.AFTER,
                )
            if won is None:
                return None
            doc = won
        if not doc.get("webhookQueued", True):
            await self._queue_delivery(doc)
        return _request(won) if won is not None else None

    async def _queue_delivery(self, doc: Doc) -> None:
        """Create the request's one delivery (a duplicate insert is harmless), then flag it."""
        now = self._clock()
        async with translated("queueing a webhook"):
            with contextlib.suppress(DuplicateKeyError):
                await self._col("deliveries").insert_one(
                    {
                        "_id": f"{doc['_id']}:final",
                        "requestId": doc["_id"],
                        "url": doc["webhookUrl"],
                        "state": DeliveryState.PENDING.value,
                        "attempts": 0,
                        "nextAttemptAt": now,
                        "lastError": None,
                        "deliveredAt": None,
                        "leaseToken": None,
                        "leaseExpiresAt": 0.0,
                    }
                )
            await self._col("requests").update_one(
                {"_id": doc["_id"]}, {"$set": {"webhookQueued": True}}
            )

    async def unfinalized_requests(self, limit: int) -> list[str]:
        """Return requests with finalize work left: all images final but still Pending, or
        final with the webhook not yet queued (a crash between the steps)."""
        now = self._clock()
        found: list[str] = []
        async with translated("looking for unfinalized requests"):
            stuck = self._col("requests").find(
                {"finalized": True, "webhookQueued": False}, projection={"_id": 1}
            )
            found += [d["_id"] async for d in stuck.limit(limit)]
            pending = self._col("requests").find(
                {"status": RequestStatus.PENDING.value}, projection={"_id": 1}
            )
            for doc in await pending.sort("checkedAt", ASCENDING).limit(limit).to_list():
                await self._col("requests").update_one(
                    {"_id": doc["_id"]}, {"$set": {"checkedAt": now}}
                )
                if not await self._unfinished(doc["_id"]):
                    found.append(doc["_id"])
        return found[:limit]

    async def queue_depth(self) -> int:
        """Count queued images."""
        async with translated("counting queued images"):
            return await self._col("images").count_documents({"state": ImageState.QUEUED.value})

    async def cancel_request(self, request_id: str) -> None:
        """Fail every unfinished image with ``cancelled`` (clearing their leases)."""
        await self._request_doc(request_id)
        async with translated("cancelling a request"):
            await self._col("images").update_many(
                {"requestId": request_id, "state": {"$in": _ACTIVE}},
                {
                    "$set": {
                        "state": ImageState.FAILED.value,
                        "failureCode": CANCELLED.code,
                        "failureMessage": CANCELLED.message,
                        "leaseToken": None,
                        "updatedAt": self._clock(),
                    }
                },
            )

    async def delete_request(self, request_id: str) -> None:
        """Remove the request first (so it disappears at once), then what it owned."""
        await self._request_doc(request_id)
        async with translated("deleting a request"):
            await self._col("requests").delete_one({"_id": request_id})
            for name in ("images", "products", "deliveries", "idempotency"):
                await self._col(name).delete_many({"requestId": request_id})

    async def finished_before(self, cutoff: float, limit: int) -> list[str]:
        """Return final requests that finished before ``cutoff``."""
        async with translated("looking for old requests"):
            cursor = self._col("requests").find(
                {"finalized": True, "finishedAt": {"$lt": cutoff}}, projection={"_id": 1}
            )
            return [d["_id"] for d in await cursor.limit(limit).to_list()]

    async def get_image_data(self, image_id: str) -> StoredImage:
        """Return a processed image's bytes or raise ImageNotFound."""
        async with translated("reading an image"):
            doc = await self._col("images").find_one(
                {"_id": image_id, "state": ImageState.DONE.value},
                projection={"image": 1, "contentType": 1, "etag": 1},
            )
        if doc is None or doc.get("image") is None:
            raise ImageNotFound(image_id)
        return StoredImage(image_id, bytes(doc["image"]), doc["contentType"], doc["etag"])

    # -- webhook deliveries -----------------------------------------------------------

    async def claim_deliveries(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[DeliveryClaim]:
        """Lease up to ``limit`` due deliveries, one atomic update each."""
        now = self._clock()
        claims: list[DeliveryClaim] = []
        async with translated("claiming webhook deliveries"):
            while len(claims) < limit:
                token = new_id()
                doc = await self._col("deliveries").find_one_and_update(
                    {
                        "state": DeliveryState.PENDING.value,
                        "nextAttemptAt": {"$lte": now},
                        "leaseExpiresAt": {"$lte": now},
                    },
                    {
                        "$set": {"leaseToken": token, "leaseExpiresAt": now + lease_seconds},
                        "$inc": {"attempts": 1},
                    },
                    sort=[("nextAttemptAt", ASCENDING)],
                    return_document=ReturnDocument.AFTER,
                )
                if doc is None:
                    break
                claims.append(
                    DeliveryClaim(doc["_id"], doc["requestId"], doc["url"], doc["attempts"], token)
                )
        return claims

    async def record_delivery(
        self,
        claim: DeliveryClaim,
        *,
        delivered: bool,
        error: str | None,
        next_attempt_at: float | None,
    ) -> None:
        """Record one delivery attempt, fenced by the claim's token."""
        now = self._clock()
        state, when = delivery_outcome(delivered, next_attempt_at, now)
        async with translated("recording a webhook attempt"):
            result = await self._col("deliveries").update_one(
                {"_id": claim.delivery_id, "leaseToken": claim.token},
                {
                    "$set": {
                        "state": state.value,
                        "lastError": error,
                        "deliveredAt": when,
                        "nextAttemptAt": next_attempt_at if next_attempt_at is not None else now,
                        "leaseToken": None,
                        "leaseExpiresAt": 0.0,
                    }
                },
            )
        if result.matched_count != 1:
            raise LeaseLost(f"delivery {claim.delivery_id} is no longer held by this claim")

    async def list_deliveries(self, request_id: str) -> list[Delivery]:
        """Return a request's webhook deliveries."""
        await self._request_doc(request_id)
        async with translated("reading webhook deliveries"):
            docs = await self._col("deliveries").find({"requestId": request_id}).to_list()
        return [_delivery(d) for d in docs]
