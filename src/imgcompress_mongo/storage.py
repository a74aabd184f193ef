"""``MongoStorage``: the core's Storage protocol on MongoDB, with pymongo's async client.

Collections, one flat document per thing (see :mod:`._documents` for the fields):
``requests`` (``_id`` = requestId), ``products``, ``images`` (``_id`` = imageId, the
processed bytes in ``image`` once done), ``deliveries`` (``_id`` = ``<requestId>:final``),
``idempotency`` (``_id`` = the Idempotency-Key) and ``counters`` (the claim order).
Every change is a top-level ``$set``/``$inc`` on one document, conditional on the state
it starts from, so any number of web and worker processes on any number of machines can
share one database. No multi-document transactions are used (the nx-27017 stand-in the
tests run on has none, and a standalone mongod neither).

Decisions:

- **Claims**: MongoDB has no ``UPDATE ... LIMIT ... RETURNING``, so images are claimed one
  ``find_one_and_update`` at a time (expired leases first, then the queue in ``seq``
  order), up to ``limit``; each is atomic, so two workers never get the same image.
  ``seq`` comes from one ``$inc`` on a counter per request, so the queue is first in,
  first out across processes.
- **Finishing** an image is one update filtered on its id, the claim's lease token and
  the states :func:`~imgcompress_core.workflow.sources` allows. When it matches nothing
  the document says why: another token means LeaseLost; the same claim completing twice
  is a no-op; anything else goes to ``check_transition`` (IllegalTransition).
- **Finalizing** happens exactly once: ``find_one_and_update`` from ``Pending`` to the
  final status can match for one caller only, and only that caller gets the record. The
  webhook delivery has a fixed ``_id``, so it is created at most once even if a crash
  between the two steps makes the sweep (``unfinalized_requests``) create it again.
- **Creating** a request writes products and images first and the request last, which
  makes them visible. If a write fails, what was written is removed (best effort, for at
  most 5 s). A process killed between those writes leaves images of a request that
  never appears: workers still process them (finalizing then logs RequestNotFound) and
  retention never deletes them. Only a multi-document transaction (replica sets only)
  closes that gap; the upload itself was not acknowledged, so nothing accepted is lost.
- **Oversized images**: BSON documents hold at most 16 MiB. An image whose processed
  bytes exceed ``MAX_IMAGE_BYTES`` (15 MiB, keeping 1 MiB for the other fields) is
  refused *before anything is written*: ``complete_image`` raises
  ``ImageFailure(code="output_too_large")``, which the worker records as that image's
  failure (the image keeps its lease until then). Downloads may be up to
  ``max_image_bytes`` (25 MiB by default), but a compressed output over 15 MiB is rare.
- **Durability**: writes use write concern ``majority`` and reads ``majority`` read
  concern (both work on a standalone mongod, a replica set and the stand-in); a client
  the store creates itself turns on retryable writes.
- **Errors**: connection trouble (``ConnectionFailure``: ``AutoReconnect``,
  ``ServerSelectionTimeoutError``, network timeouts) becomes the core's
  ``StorageUnavailable``; any other driver error an ``ImgCompressError`` with code
  ``storage_error``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence

from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from imgcompress_core.errors import (
    ImageFailure,
    ImageNotFound,
    ImgCompressError,
    RequestNotFound,
    StorageUnavailable,
)
from imgcompress_core.model import (
    Claim,
    Delivery,
    DeliveryClaim,
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
from imgcompress_core.workflow import CANCELLED, final_status

from . import _deliveries, _images, _requests
from ._documents import (
    FINAL_STATUSES,
    MAX_IMAGE_BYTES,
    NO_BYTES,
    UNFINISHED,
    Doc,
    image_docs,
    product_docs,
    request_doc,
    to_delivery,
    to_image,
    to_progress,
    to_request,
)
from ._errors import translated
from ._schema import DEFAULT_DATABASE, database_from_uri, ensure_indexes, reserve_seq

__all__ = ["MAX_IMAGE_BYTES", "MongoStorage", "create_storage"]


def create_storage(settings: Settings) -> MongoStorage:
    """Build the store from settings (the ``imgcompress.storage`` entry point's factory)."""
    if not settings.mongodb_uri:
        raise ImgCompressError("no MongoDB URI is set", code="storage_adapter_missing")
    return MongoStorage(settings.mongodb_uri)


class MongoStorage:
    """Storage on MongoDB: flat documents, conditional updates, leases with fencing tokens."""

    max_image_bytes: int = MAX_IMAGE_BYTES  # largest processed image kept (one document)

    def __init__(
        self,
        uri: str,
        *,
        database: str | None = None,
        clock: Callable[[], float] = time.time,
        client: AsyncMongoClient[Doc] | None = None,
    ) -> None:
        self.uri = uri
        self.database_name = database or database_from_uri(uri) or DEFAULT_DATABASE
        self._clock = clock
        self._client = client
        self._owns_client = client is None
        self._db: AsyncDatabase[Doc] | None = None

    # -- plumbing ---------------------------------------------------------------------

    @property
    def database(self) -> AsyncDatabase[Doc]:
        """The database handle (majority write and read concern); StorageUnavailable until
        the store is open."""
        return self._database()

    def _database(self) -> AsyncDatabase[Doc]:
        if self._db is None:
            raise StorageUnavailable("the MongoDB store is not open (call open() first)")
        return self._db

    def _col(self, name: str) -> AsyncCollection[Doc]:
        return self._database().get_collection(name)

    async def open(self) -> None:
        """Create the client (unless one was given) and the indexes; idempotent."""
        async with translated("connecting"):
            if self._client is None:
                self._client = AsyncMongoClient(self.uri, retryWrites=True)
            self._db = self._client.get_database(
                self.database_name,
                write_concern=WriteConcern(w="majority"),
                read_concern=ReadConcern("majority"),
            )
        async with translated("creating indexes"):
            await ensure_indexes(self._db)

    async def close(self) -> None:
        """Close the client if this store created it."""
        if self._client is not None and self._owns_client:
            await self._client.close()
            self._client = None
        self._db = None

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the server answers ``ping``."""
        async with translated("pinging"):
            await self._database().command("ping")

    # -- requests ---------------------------------------------------------------------

    async def create_request(self, request: NewRequest) -> str:
        """Store the products and images, then the request that makes them visible (or
        return the earlier request made with the same Idempotency-Key)."""
        rid = request.request_id
        if request.idempotency_key is not None:
            earlier = await _requests.claim_key(self._database(), request)
            if earlier != rid:
                return earlier
        now = self._clock()
        try:
            async with translated("storing a request"):
                if request.products:
                    await self._col("products").insert_many(product_docs(request))
                if request.images:
                    first = await reserve_seq(self._database(), len(request.images))
                    await self._col("images").insert_many(image_docs(request, first, now))
                await self._col("requests").insert_one(request_doc(request, now))
        except ImgCompressError:
            await _requests.undo_create(self._database(), request)
            raise
        return rid

    async def _request_doc(self, request_id: str) -> Doc:
        async with translated("reading a request"):
            doc = await self._col("requests").find_one({"_id": request_id})
        if doc is None:
            raise RequestNotFound(request_id)
        return doc

    async def get_request(self, request_id: str) -> RequestRecord:
        """Return a request or raise RequestNotFound."""
        return to_request(await self._request_doc(request_id))

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
                .find({"requestId": request_id}, projection=NO_BYTES)
                .sort([("row", ASCENDING), ("position", ASCENDING)])
            )
            return [to_image(d) for d in await cursor.to_list()]

    async def _progress(self, request_id: str) -> Progress:
        pipeline: list[Doc] = [
            {"$match": {"requestId": request_id}},
            {"$group": {"_id": "$state", "n": {"$sum": 1}}},
        ]
        async with translated("counting images"):
            cursor = await self._col("images").aggregate(pipeline)
            return to_progress({d["_id"]: d["n"] for d in await cursor.to_list()})

    async def progress(self, request_id: str) -> Progress:
        """Count a request's images by state (one ``$group`` aggregation)."""
        await self._request_doc(request_id)
        return await self._progress(request_id)

    # -- images -----------------------------------------------------------------------

    async def claim_images(
        self, owner: str, limit: int, lease_seconds: float, max_attempts: int
    ) -> list[Claim]:
        """Lease up to ``limit`` images (expired leases first, then the queue in order),
        one atomic find_one_and_update each."""
        async with translated("claiming images"):
            return await _images.claim(
                self._col("images"),
                self._clock(),
                owner=owner,
                token=new_id(),
                limit=limit,
                lease_seconds=lease_seconds,
                max_attempts=max_attempts,
            )

    async def renew_claims(self, claims: Sequence[Claim], lease_seconds: float) -> list[Claim]:
        """Extend the leases these claims still hold; return those."""
        async with translated("renewing leases"):
            return await _images.renew(self._col("images"), claims, self._clock() + lease_seconds)

    async def _finish(self, claim: Claim, target: ImageState, fields: Doc) -> None:
        async with translated("updating an image"):
            await _images.finish(self._col("images"), claim, target, fields, self._clock())

    async def complete_image(self, claim: Claim, result: ImageResult) -> None:
        """Store the processed bytes and mark the image done, in one conditional update.

        Raises ImageFailure (``output_too_large``) without writing anything when the bytes
        do not fit in one document.
        """
        if len(result.data) > self.max_image_bytes:
            raise ImageFailure(
                f"the compressed image is {len(result.data)} bytes; the MongoDB store keeps "
                f"at most {self.max_image_bytes} bytes per image (one BSON document)",
                code="output_too_large",
            )
        fields: Doc = {
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
        }
        await self._finish(claim, ImageState.DONE, fields)

    async def fail_image(self, claim: Claim, failure: Failure) -> None:
        """Mark the image failed for good."""
        fields = {"failureCode": failure.code, "failureMessage": failure.message}
        await self._finish(claim, ImageState.FAILED, fields)

    async def retry_image(self, claim: Claim, failure: Failure, not_before: float) -> None:
        """Queue the image again after ``not_before`` (its lease ends here)."""
        fields: Doc = {
            "failureCode": failure.code,
            "failureMessage": failure.message,
            "notBefore": not_before,
            "leaseOwner": None,
            "leaseToken": None,
            "leaseExpiresAt": 0.0,
        }
        await self._finish(claim, ImageState.QUEUED, fields)

    # -- finalizing -------------------------------------------------------------------

    async def _unfinished(self, request_id: str) -> bool:
        async with translated("counting unfinished images"):
            count = await self._col("images").count_documents(
                {"requestId": request_id, "state": {"$in": UNFINISHED}}, limit=1
            )
        return count > 0

    async def finalize_request(self, request_id: str) -> RequestRecord | None:
        """Set the final status once (one conditional update wins), then queue the webhook."""
        doc = await self._request_doc(request_id)
        won = None
        if doc["status"] == RequestStatus.PENDING.value:
            if await self._unfinished(request_id):
                return None
            status = final_status(await self._progress(request_id))
            if status is None:
                return None
            now = self._clock()
            async with translated("finalizing a request"):
                won = await self._col("requests").find_one_and_update(
                    {"_id": request_id, "status": RequestStatus.PENDING.value},
                    {"$set": {"status": status.value, "updatedAt": now, "finishedAt": now}},
                    return_document=ReturnDocument.AFTER,
                )
            if won is None:
                return None  # another caller finalized it first
            doc = won
        if not doc.get("webhookQueued", True):
            async with translated("queueing a webhook"):
                await _deliveries.insert_delivery(self._col("deliveries"), doc, self._clock())
                await self._col("requests").update_one(
                    {"_id": request_id}, {"$set": {"webhookQueued": True}}
                )
        return to_request(won) if won is not None else None

    async def unfinalized_requests(self, limit: int) -> list[str]:
        """Return requests with finalize work left: Pending with every image final, or final
        without their webhook delivery (a crash between the two steps).

        Pending requests are looked at least recently checked first, ``limit`` per call,
        so repeated sweeps visit them all without counting every request's images at once.
        """
        now = self._clock()
        requests = self._col("requests")
        found: list[str] = []
        async with translated("looking for unfinalized requests"):
            stuck = requests.find(
                {"webhookQueued": False, "status": {"$in": FINAL_STATUSES}}, projection={"_id": 1}
            )
            found += [d["_id"] for d in await stuck.limit(limit).to_list()]
            pending = requests.find({"status": RequestStatus.PENDING.value}, projection={"_id": 1})
            for doc in await pending.sort("checkedAt", ASCENDING).limit(limit).to_list():
                await requests.update_one({"_id": doc["_id"]}, {"$set": {"checkedAt": now}})
                if not await self._unfinished(doc["_id"]):
                    found.append(doc["_id"])
        return found[:limit]

    async def queue_depth(self) -> int:
        """Count queued images across all requests."""
        async with translated("counting queued images"):
            return await self._col("images").count_documents({"state": ImageState.QUEUED.value})

    async def cancel_request(self, request_id: str) -> None:
        """Fail every unfinished image with ``cancelled`` (clearing their leases)."""
        await self._request_doc(request_id)
        async with translated("cancelling a request"):
            await self._col("images").update_many(
                {"requestId": request_id, "state": {"$in": UNFINISHED}},
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
                {"status": {"$in": FINAL_STATUSES}, "finishedAt": {"$lt": cutoff}},
                projection={"_id": 1},
            )
            return [d["_id"] for d in await cursor.limit(limit).to_list()]

    async def get_image_data(self, image_id: str) -> StoredImage:
        """Return a processed image's bytes or raise ImageNotFound (the only read of them)."""
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
        async with translated("claiming webhook deliveries"):
            return await _deliveries.claim_deliveries(
                self._col("deliveries"), self._clock(), limit, lease_seconds, new_id()
            )

    async def record_delivery(
        self,
        claim: DeliveryClaim,
        *,
        delivered: bool,
        error: str | None,
        next_attempt_at: float | None,
    ) -> None:
        """Record one delivery attempt, fenced by the claim's token."""
        async with translated("recording a webhook attempt"):
            await _deliveries.record_delivery(
                self._col("deliveries"),
                claim,
                self._clock(),
                delivered=delivered,
                error=error,
                next_attempt_at=next_attempt_at,
            )

    async def list_deliveries(self, request_id: str) -> list[Delivery]:
        """Return a request's webhook deliveries."""
        await self._request_doc(request_id)
        async with translated("reading webhook deliveries"):
            cursor = self._col("deliveries").find({"requestId": request_id}).sort("_id", ASCENDING)
            return [to_delivery(d) for d in await cursor.to_list()]
