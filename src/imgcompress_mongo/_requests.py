"""Creating requests on MongoDB without transactions: Idempotency-Keys and undo."""

from __future__ import annotations

import contextlib

import pymongo
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from imgcompress_core.errors import StorageUnavailable
from imgcompress_core.model import KeyHolder, NewRequest

from ._documents import Doc
from ._errors import translated

__all__ = ["UNDO_SECONDS", "claim_key", "undo_create"]

UNDO_SECONDS = 5.0


async def claim_key(db: AsyncDatabase[Doc], request: NewRequest) -> KeyHolder | None:
    """Insert the request's Idempotency-Key document (its ``_id`` is the key) and return
    None, or return the earlier request that holds the key."""
    keys = db.get_collection("idempotency")
    document = {
        "_id": request.idempotency_key,
        "requestId": request.request_id,
        "bodyHash": request.body_hash,
    }
    for _ in range(3):  # the earlier key may be deleted in between: try again
        async with translated("checking an Idempotency-Key"):
            try:
                await keys.insert_one(document)
                return None
            except DuplicateKeyError:
                earlier = await keys.find_one({"_id": request.idempotency_key})
        if earlier is not None:
            return KeyHolder(str(earlier["requestId"]), str(earlier["bodyHash"]))
    raise StorageUnavailable("the Idempotency-Key kept changing; try again")


async def undo_create(db: AsyncDatabase[Doc], request: NewRequest) -> None:
    """Remove what a failed create wrote (its products, images and key), unless its
    request document exists; best effort within ``UNDO_SECONDS``, so a dead connection
    leaves it as it is and does not hold up the error."""
    rid = request.request_id
    with contextlib.suppress(PyMongoError), pymongo.timeout(UNDO_SECONDS):
        requests = db.get_collection("requests")
        if await requests.find_one({"_id": rid}, projection={"_id": 1}) is not None:
            return
        for name in ("images", "products"):
            await db.get_collection(name).delete_many({"requestId": rid})
        if request.idempotency_key is not None:
            await db.get_collection("idempotency").delete_one(
                {"_id": request.idempotency_key, "requestId": rid}
            )
