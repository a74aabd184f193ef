"""Processed image bytes on MongoDB: one document per content-addressed blob."""

from __future__ import annotations

from collections.abc import Sequence

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from imgcompress_core.errors import BlobNotFound, ImageFailure
from imgcompress_core.model import Blob

from ._documents import MAX_IMAGE_BYTES, Doc

__all__ = ["delete", "get", "put", "written_before"]


async def put(
    blobs: AsyncCollection[Doc], key: str, data: bytes, content_type: str, now: float
) -> None:
    """Insert the blob, or stamp the copy already there as written ``now``.

    Raises ImageFailure (``output_too_large``) without writing anything when the bytes
    do not fit in one BSON document.
    """
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageFailure(
            f"the compressed image is {len(data)} bytes; the MongoDB store keeps at most "
            f"{MAX_IMAGE_BYTES} bytes per image (one BSON document)",
            code="output_too_large",
        )
    try:
        await blobs.insert_one(
            {"_id": key, "data": data, "contentType": content_type, "writtenAt": now}
        )
    except DuplicateKeyError:
        await blobs.update_one({"_id": key}, {"$set": {"writtenAt": now}})


async def get(blobs: AsyncCollection[Doc], key: str) -> Blob:
    """Return a blob or raise BlobNotFound."""
    doc = await blobs.find_one({"_id": key})
    if doc is None:
        raise BlobNotFound(key)
    return Blob(key, bytes(doc["data"]), doc["contentType"])


async def written_before(
    blobs: AsyncCollection[Doc], cutoff: float, after: str, limit: int
) -> list[str]:
    """Return keys after ``after`` of blobs written before ``cutoff``, in key order."""
    cursor = blobs.find(
        {"_id": {"$gt": after}, "writtenAt": {"$lt": cutoff}}, projection={"_id": 1}
    ).sort("_id", ASCENDING)
    return [d["_id"] for d in await cursor.limit(limit).to_list()]


async def delete(blobs: AsyncCollection[Doc], keys: Sequence[str], written_before: float) -> None:
    """Delete these blobs unless written again since ``written_before``."""
    await blobs.delete_many({"_id": {"$in": list(keys)}, "writtenAt": {"$lt": written_before}})
