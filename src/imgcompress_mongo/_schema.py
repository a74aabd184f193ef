"""The collections' indexes, the claim-order counter and the database name of a URI."""

from __future__ import annotations

from urllib.parse import unquote

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ._documents import Doc

__all__ = ["DEFAULT_DATABASE", "INDEXES", "database_from_uri", "ensure_indexes", "reserve_seq"]

DEFAULT_DATABASE = "imgcompress"

# (collection, fields, unique) for every index; create_index is idempotent.
INDEXES: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("requests", ("requestId",), True),
    ("requests", ("status", "checkedAt"), False),  # the finalize sweep, least recent first
    ("requests", ("status", "finishedAt"), False),  # retention
    ("requests", ("webhookQueued", "status"), False),  # deliveries lost to a crash
    ("products", ("requestId", "row"), False),
    ("images", ("requestId", "row", "position"), False),  # list_images
    ("images", ("requestId", "state"), False),  # progress, finalize, cancel
    # Claims. Queued: equality on state, sort on seq, then the notBefore range (ESR order),
    # so a claim walks the queue in order and stops at the first due image.
    ("images", ("state", "seq", "notBefore"), False),
    ("images", ("state", "leaseExpiresAt"), False),  # expired leases
    ("deliveries", ("state", "nextAttemptAt"), False),
    ("deliveries", ("requestId",), False),
    ("idempotency", ("requestId",), False),
)


async def ensure_indexes(db: AsyncDatabase[Doc]) -> None:
    """Create every index that does not exist yet."""
    for collection, fields, unique in INDEXES:
        keys = [(field, ASCENDING) for field in fields]
        await db.get_collection(collection).create_index(keys, unique=unique)


async def reserve_seq(db: AsyncDatabase[Doc], count: int) -> int:
    """Reserve ``count`` consecutive image sequence numbers; return the first.

    One atomic ``$inc`` on a counter document, so numbers never repeat across processes
    and claims take images in the order they were accepted.
    """
    counters = db.get_collection("counters")
    for _ in range(3):
        try:
            doc = await counters.find_one_and_update(
                {"_id": "images"},
                {"$inc": {"seq": count}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # two first upserts raced; the counter exists now
            continue
        assert doc is not None  # upsert with AFTER always returns the document
        return int(doc["seq"]) - count + 1
    raise DuplicateKeyError("could not reserve image sequence numbers")


def database_from_uri(uri: str) -> str | None:
    """Return the database a MongoDB URI names, or None (no DNS lookup, unlike parse_uri)."""
    rest = uri.split("://", 1)[-1].split("?", 1)[0]
    if "/" not in rest:
        return None
    name = unquote(rest.split("/", 1)[1])
    return name or None
