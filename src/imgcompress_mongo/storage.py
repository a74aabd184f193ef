"""``MongoStorage``: every storage port of the core on MongoDB, with pymongo's async client.

Collections, one flat document per thing (see :mod:`._documents` for the fields):
``requests`` (``_id`` = requestId), ``products``, ``images`` (``_id`` = imageId),
``blobs`` (``_id`` = the SHA-256 of the processed bytes), ``deliveries`` and
``idempotency`` (``_id`` = the Idempotency-Key). Every change is a top-level
``$set``/``$inc`` on one document, conditional on the state it starts from, so any
number of web and worker processes on any number of machines can share one database.
No multi-document transactions are used (the nx-27017 stand-in the tests run on has
none, and a standalone mongod neither). The rules are the core workflow's; this module
only persists.

Decisions:

- **Claims**: MongoDB has no ``UPDATE ... LIMIT ... RETURNING``, so images are claimed one
  ``find_one_and_update`` at a time (expired leases first, then the queue in row and
  position order) within the request the workflow chose; each is atomic, so two
  workers never get the same image.
- **Finishing** an image is one update filtered on its id, the claim's lease token and
  the states the workflow allows; when it matches nothing the store returns the
  document's state and token and the workflow says why.
- **Finalizing** happens exactly once: ``find_one_and_update`` from ``Pending`` to the
  final status can match for one caller only, and only that caller gets the record. The
  webhook delivery has the workflow's fixed id, so it is created at most once even if a
  crash between the two steps makes the sweep (``unfinalized_requests``) create it again.
- **Creating** a request writes products and images first and the request last, which
  makes them visible. If a write fails, what was written is removed (best effort, for at
  most 5 s). A process killed between those writes leaves images of a request that
  never appears; no worker claims them (claims go through Pending requests) and the
  upload itself was not acknowledged, so nothing accepted is lost.
- **Oversized images**: BSON documents hold at most 16 MiB. A blob over
  ``MAX_IMAGE_BYTES`` (15 MiB) is refused before anything is written: ``put_blob``
  raises ``ImageFailure(code="output_too_large")``, which the worker records as that
  image's failure. Object storage (a separate blob store) has no such limit.
- **Durability**: writes use write concern ``majority`` and reads ``majority`` read
  concern (both work on a standalone mongod, a replica set and the stand-in); a client
  the store creates itself turns on retryable writes.
- **Errors**: connection trouble (``ConnectionFailure``: ``AutoReconnect``,
  ``ServerSelectionTimeoutError``, network timeouts) becomes the core's
  ``StorageUnavailable``; any other driver error a ``StorageError``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from imgcompress_core.errors import (
    ImageNotFound,
    ImgCompressError,
    RequestNotFound,
    StorageUnavailable,
)
from imgcompress_core.model import (
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
    ProductRecord,
    RequestRecord,
    RequestStatus,
    new_id,
)
from imgcompress_core.settings import Settings

from . import _deliveries, _images, _requests
from ._cache_store import MongoBlobsAndCache
from ._documents import (
    FINAL_STATUSES,
    MAX_IMAGE_BYTES,
    Doc,
    image_docs,
    product_docs,
    request_doc,
    to_delivery,
    to_image,
    to_request,
)
from ._errors import translated
from ._schema import DEFAULT_DATABASE, database_from_uri, ensure_indexes, move_image_bytes

__all__ = ["MAX_IMAGE_BYTES", "MongoStorage", "create_storage"]


def create_storage(settings: Settings) -> MongoStorage:
    """Build the store from settings (the ``imgcompress.storage`` entry point's factory)."""
    if not settings.mongodb_uri:
        raise ImgCompressError("no MongoDB URI is set", code="storage_adapter_missing")
    return MongoStorage(settings.mongodb_uri)


class MongoStorage(MongoBlobsAndCache):
    """Every storage port on MongoDB: flat documents, conditional updates, fenced leases."""

    def __init__(
        self,
        uri: str,
        *,
        database: str | None = None,
        client: AsyncMongoClient[Doc] | None = None,
    ) -> None:
        self.uri = uri
        self.database_name = database or database_from_uri(uri) or DEFAULT_DATABASE
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
        async with translated("moving image bytes into blobs"):
            await move_image_bytes(self._db, time.time())

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

    async def create_request(self, request: NewRequest) -> KeyHolder | None:
        """Store the products and images, then the request that makes them visible (or
        return the request already holding its Idempotency-Key)."""
        if request.idempotency_key is not None:
            holder = await _requests.claim_key(self._database(), request)
            if holder is not None:
                return holder
        now = request.created_at
        try:
            async with translated("storing a request"):
                if request.products:
                    await self._col("products").insert_many(product_docs(request))
                if request.images:
                    await self._col("images").insert_many(image_docs(request, now))
                await self._col("requests").insert_one(request_doc(request, now))
        except ImgCompressError:
            await _requests.undo_create(self._database(), request)
            raise
        return None

    async def _request_doc(self, request_id: str) -> Doc:
        async with translated("reading a request"):
            doc = await self._col("requests").find_one({"_id": request_id})
        if doc is None:
            raise RequestNotFound(request_id)
        return doc

    async def get_request(self, request_id: str) -> RequestRecord:
        """Return a request or raise RequestNotFound."""
        return to_request(await self._request_doc(request_id))

    async def list_products(
        self, request_id: str, *, after_row: int = 0, limit: int | None = None
    ) -> list[ProductRecord]:
        """Return a request's products in row order, after ``after_row``, at most ``limit``."""
        await self._request_doc(request_id)
        async with translated("reading products"):
            cursor = self._col("products").find(
                {"requestId": request_id, "row": {"$gt": after_row}}
            )
            docs = await cursor.sort("row", ASCENDING).limit(limit or 0).to_list()
        return [
            ProductRecord(request_id, d["row"], d["serial"], d["name"], tuple(d["cells"]))
            for d in docs
        ]

    async def list_images(
        self, request_id: str, *, rows: tuple[int, int] | None = None
    ) -> list[ImageRecord]:
        """Return a request's images by row and position (only ``rows``, if given)."""
        await self._request_doc(request_id)
        query: Doc = {"requestId": request_id}
        if rows is not None:
            query["row"] = {"$gte": rows[0], "$lte": rows[1]}
        async with translated("reading images"):
            cursor = (
                self._col("images").find(query).sort([("row", ASCENDING), ("position", ASCENDING)])
            )
            return [to_image(d) for d in await cursor.to_list()]

    async def get_image(self, image_id: str) -> ImageRecord:
        """Return one image or raise ImageNotFound."""
        async with translated("reading an image"):
            doc = await self._col("images").find_one({"_id": image_id})
        if doc is None:
            raise ImageNotFound(image_id)
        return to_image(doc)

    async def count_images(self, request_id: str) -> Mapping[ImageState, int]:
        """Count a request's images by state (one ``$group`` aggregation)."""
        await self._request_doc(request_id)
        pipeline: list[Doc] = [
            {"$match": {"requestId": request_id}},
            {"$group": {"_id": "$state", "n": {"$sum": 1}}},
        ]
        async with translated("counting images"):
            cursor = await self._col("images").aggregate(pipeline)
            return {ImageState(d["_id"]): d["n"] for d in await cursor.to_list()}

    async def _has_images_in(self, request_id: str, states: frozenset[ImageState]) -> bool:
        values = sorted(s.value for s in states)
        async with translated("looking for images in a state"):
            count = await self._col("images").count_documents(
                {"requestId": request_id, "state": {"$in": values}}, limit=1
            )
        return count > 0

    async def has_images_in(self, request_id: str, states: frozenset[ImageState]) -> bool:
        """Return True if any of the request's images is in ``states``."""
        await self._request_doc(request_id)
        return await self._has_images_in(request_id, states)

    async def finalize_request(
        self, request_id: str, status: RequestStatus, now: float, delivery_id: str | None
    ) -> RequestRecord | None:
        """Set the final status once (one conditional update wins), then queue the webhook;
        a final request whose delivery a crash lost gets it now."""
        async with translated("finalizing a request"):
            won = await self._col("requests").find_one_and_update(
                {"_id": request_id, "status": RequestStatus.PENDING.value},
                {"$set": {"status": status.value, "updatedAt": now, "finishedAt": now}},
                return_document=ReturnDocument.AFTER,
            )
        doc = won if won is not None else await self._request_doc(request_id)
        if not doc.get("webhookQueued", True) and doc["status"] != RequestStatus.PENDING.value:
            async with translated("queueing a webhook"):
                if delivery_id is not None:
                    await _deliveries.insert_delivery(
                        self._col("deliveries"), doc, delivery_id, now
                    )
                await self._col("requests").update_one(
                    {"_id": request_id}, {"$set": {"webhookQueued": True}}
                )
        return to_request(won) if won is not None else None

    async def unfinalized_requests(self, limit: int, now: float) -> list[str]:
        """Return requests with finalize work left: Pending with every image final, or final
        without their webhook delivery (a crash between the two steps).

        Pending requests are looked at least recently checked first, ``limit`` per call,
        so repeated sweeps visit them all without counting every request's images at once.
        """
        requests = self._col("requests")
        unfinished = frozenset({ImageState.QUEUED, ImageState.WORKING})
        found: list[str] = []
        async with translated("looking for unfinalized requests"):
            stuck = requests.find(
                {"webhookQueued": False, "status": {"$in": FINAL_STATUSES}}, projection={"_id": 1}
            )
            found += [d["_id"] for d in await stuck.limit(limit).to_list()]
            pending = requests.find({"status": RequestStatus.PENDING.value}, projection={"_id": 1})
            for doc in await pending.sort("checkedAt", ASCENDING).limit(limit).to_list():
                await requests.update_one({"_id": doc["_id"]}, {"$set": {"checkedAt": now}})
                if not await self._has_images_in(doc["_id"], unfinished):
                    found.append(doc["_id"])
        return found[:limit]

    async def cancel_images(
        self, request_id: str, states: frozenset[ImageState], failure: Failure, now: float
    ) -> None:
        """Fail the request's images in ``states`` (clearing their leases)."""
        await self._request_doc(request_id)
        async with translated("cancelling a request"):
            await self._col("images").update_many(
                {"requestId": request_id, "state": {"$in": sorted(s.value for s in states)}},
                {
                    "$set": {
                        "state": ImageState.FAILED.value,
                        "failureCode": failure.code,
                        "failureMessage": failure.message,
                        "leaseToken": None,
                        "updatedAt": now,
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

    async def referenced_blobs(self, keys: Sequence[str]) -> set[str]:
        """Return the keys some image or cached output references."""
        used: set[str] = set()
        async with translated("checking blob references"):
            for name in ("images", "outputs"):
                cursor = self._col(name).find(
                    {"blobKey": {"$in": list(keys)}}, projection={"blobKey": 1}
                )
                used |= {d["blobKey"] for d in await cursor.to_list()}
        return used

    async def list_requests(
        self, owner: str | None, before: tuple[float, str] | None, limit: int
    ) -> list[RequestRecord]:
        """Return requests newest first, older than ``before``, only ``owner``'s if given."""
        query: Doc = {} if owner is None else {"owner": owner}
        if before is not None:
            created, rid = before
            query["$or"] = [
                {"createdAt": {"$lt": created}},
                {"createdAt": created, "requestId": {"$lt": rid}},
            ]
        async with translated("listing requests"):
            cursor = self._col("requests").find(query)
            order = [("createdAt", DESCENDING), ("requestId", DESCENDING)]
            return [to_request(d) for d in await cursor.sort(order).limit(limit).to_list()]

    async def reopen_request(self, request_id: str, keep_codes: frozenset[str], now: float) -> int:
        """Make a final request Pending in a new round, then queue its failed images (codes
        not in ``keep_codes``) afresh. A crash between the two leaves a Pending request with
        nothing unfinished, which the finalize sweep finishes again."""
        failed: Doc = {
            "requestId": request_id,
            "state": ImageState.FAILED.value,
            "failureCode": {"$nin": sorted(keep_codes)},
        }
        async with translated("retrying failed images"):
            if await self._col("images").find_one(failed, projection={"_id": 1}) is None:
                await self._request_doc(request_id)
                return 0
            reopened = await self._col("requests").find_one_and_update(
                {"_id": request_id, "status": {"$in": FINAL_STATUSES}},
                {
                    "$set": {
                        "status": RequestStatus.PENDING.value,
                        "finishedAt": None,
                        "updatedAt": now,
                        "webhookQueued": False,
                    },
                    "$inc": {"round": 1},
                },
            )
            if reopened is None:
                return 0
            result = await self._col("images").update_many(
                failed,
                {
                    "$set": {
                        "state": ImageState.QUEUED.value,
                        "attempts": 0,
                        "failureCode": None,
                        "failureMessage": None,
                        "leaseOwner": None,
                        "leaseToken": None,
                        "leaseExpiresAt": 0.0,
                        "notBefore": 0.0,
                        "updatedAt": now,
                    }
                },
            )
        return result.modified_count

    # -- images -----------------------------------------------------------------------

    async def expire_leases(self, now: float, max_attempts: int, failure: Failure) -> None:
        """Fail working images whose lease expired after ``max_attempts`` attempts."""
        async with translated("expiring leases"):
            await _images.expire(self._col("images"), now, max_attempts, failure)

    async def claimable_requests(
        self, now: float, limit: int, skip_hosts: frozenset[str]
    ) -> list[tuple[str, str]]:
        """Return Pending requests with a claimable image, least recently claimed first."""
        async with translated("looking for work"):
            return await _images.claimable(
                self._col("requests"), self._col("images"), now, limit, skip_hosts
            )

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
        """Lease up to ``limit`` of the request's images and note the request's turn."""
        async with translated("claiming images"):
            claims = await _images.claim(
                self._col("images"),
                request_id,
                now=now,
                worker=worker,
                token=new_id(),
                limit=limit,
                lease_seconds=lease_seconds,
                max_attempts=max_attempts,
                skip_hosts=skip_hosts,
            )
            await self._col("requests").update_one(
                {"_id": request_id}, {"$set": {"claimedAt": now}}
            )
        return claims

    async def renew_claims(self, claims: Sequence[Claim], expires_at: float) -> list[Claim]:
        """Extend the leases these claims still hold; return those."""
        async with translated("renewing leases"):
            return await _images.renew(self._col("images"), claims, expires_at)

    async def finish_image(
        self,
        claim: Claim,
        target: ImageState,
        sources: frozenset[ImageState],
        change: ImageChange,
        now: float,
    ) -> tuple[ImageState, str | None] | None:
        """Move the image to ``target`` if the claim owns it and it is in ``sources``."""
        async with translated("updating an image"):
            return await _images.finish(self._col("images"), claim, target, sources, change, now)

    async def queue_depth(self) -> int:
        """Count queued images across all requests."""
        async with translated("counting queued images"):
            return await self._col("images").count_documents({"state": ImageState.QUEUED.value})

    # -- webhook deliveries -----------------------------------------------------------

    async def claim_deliveries(
        self, worker: str, limit: int, *, now: float, lease_seconds: float
    ) -> list[DeliveryClaim]:
        """Lease up to ``limit`` due deliveries, one atomic update each."""
        async with translated("claiming webhook deliveries"):
            return await _deliveries.claim_deliveries(
                self._col("deliveries"), now, limit, lease_seconds, new_id()
            )

    async def record_delivery(self, claim: DeliveryClaim, outcome: DeliveryOutcome) -> None:
        """Record one delivery attempt, fenced by the claim's token."""
        async with translated("recording a webhook attempt"):
            await _deliveries.record_delivery(self._col("deliveries"), claim, outcome)

    async def list_deliveries(self, request_id: str) -> list[Delivery]:
        """Return a request's webhook deliveries."""
        await self._request_doc(request_id)
        async with translated("reading webhook deliveries"):
            cursor = self._col("deliveries").find({"requestId": request_id}).sort("_id", ASCENDING)
            return [to_delivery(d) for d in await cursor.to_list()]
