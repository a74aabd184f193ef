"""The collections' indexes and the database name of a URI."""

from __future__ import annotations

import contextlib
import hashlib
from urllib.parse import unquote

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ._documents import Doc

__all__ = [
    "DEFAULT_DATABASE",
    "INDEXES",
    "database_from_uri",
    "ensure_indexes",
    "move_image_bytes",
]

DEFAULT_DATABASE = "imgcompress"

# (collection, fields, unique) for every index; create_index is idempotent.
INDEXES: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("requests", ("requestId",), True),
    ("requests", ("status", "checkedAt"), False),  # the finalize sweep, least recent first
    ("requests", ("status", "finishedAt"), False),  # retention
    ("requests", ("webhookQueued", "status"), False),  # deliveries lost to a crash
    ("requests", ("status", "claimedAt"), False),  # fair turns: least recently claimed first
    ("products", ("requestId", "row"), False),
    ("images", ("requestId", "row", "position"), False),  # list_images
    # Progress, finalize, cancel, and claims within a request: equality on requestId and
    # state, then the row/position sort (ESR order), so a claim walks the request in order.
    ("images", ("requestId", "state", "row", "position"), False),
    ("images", ("state", "leaseExpiresAt"), False),  # expired leases
    ("images", ("blobKey",), False),  # is a blob still referenced (the sweep)
    ("images", ("outputId",), False),  # is an output still referenced (the sweep)
    ("outputs", ("owner", "policy", "inputHash"), True),  # the content cache
    ("outputs", ("lastUsedAt",), False),
    ("outputs", ("blobKey",), False),
    ("sources", ("owner", "inputHash"), False),
    ("requests", ("owner", "createdAt", "requestId"), False),  # newest first, per owner
    ("requests", ("createdAt", "requestId"), False),
    ("blobs", ("writtenAt",), False),
    ("deliveries", ("state", "nextAttemptAt"), False),
    ("deliveries", ("requestId",), False),
    ("idempotency", ("requestId",), False),
)


async def ensure_indexes(db: AsyncDatabase[Doc]) -> None:
    """Create every index that does not exist yet."""
    for collection, fields, unique in INDEXES:
        keys = [(field, ASCENDING) for field in fields]
        await db.get_collection(collection).create_index(keys, unique=unique)


def database_from_uri(uri: str) -> str | None:
    """Return the database a MongoDB URI names, or None (no DNS lookup, unlike parse_uri)."""
    rest = uri.split("://", 1)[-1].split("?", 1)[0]
    if "/" not in rest:
        return None
    name = unquote(rest.split("/", 1)[1])
    return name or None


async def move_image_bytes(db: AsyncDatabase[Doc], now: float, batch: int = 100) -> int:
    """Move processed bytes that older versions kept on the image document (``image``)
    into content-addressed blobs, and point the image at its blob; return how many.

    Safe to run from several processes at once: a blob insert that loses a race is a
    no-op, and each image is updated conditionally on still having its bytes.
    """
    meta = db.get_collection("meta")
    if await meta.find_one({"_id": "schema", "version": {"$gte": 2}}) is not None:
        return 0  # done before: no scan of the images at every start
    images, blobs = db.get_collection("images"), db.get_collection("blobs")
    moved = 0
    while True:
        docs = (
            await images.find({"image": {"$ne": None}}, projection={"image": 1, "contentType": 1})
            .limit(batch)
            .to_list()
        )
        if not docs:
            await meta.replace_one({"_id": "schema"}, {"_id": "schema", "version": 2}, upsert=True)
            return moved
        for doc in docs:
            data = bytes(doc["image"])
            key = hashlib.sha256(data).hexdigest()
            with contextlib.suppress(DuplicateKeyError):
                await blobs.insert_one(
                    {
                        "_id": key,
                        "data": data,
                        "contentType": doc.get("contentType") or "",
                        "writtenAt": now,
                    }
                )
            await images.update_one(
                {"_id": doc["_id"], "image": {"$ne": None}},
                {"$set": {"blobKey": key, "image": None}},
            )
            moved += 1
