"""The reuse cache on MongoDB: each URL's last download (``sources``) and each input's
output (``outputs``, unique per owner, policy and input hash)."""

from __future__ import annotations

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from imgcompress_core.model import Output, Source

from ._documents import Doc, output_doc, source_doc, to_output, to_source

__all__ = ["add_output", "delete_unreferenced", "find_output", "get_source", "put_source"]


async def get_source(db: AsyncDatabase[Doc], owner: str, url: str) -> Source | None:
    """Return the last download of ``url`` for ``owner``."""
    doc = await db.get_collection("sources").find_one({"_id": f"{owner}|{url}"})
    return None if doc is None else to_source(doc)


async def put_source(db: AsyncDatabase[Doc], source: Source) -> None:
    """Record (or replace) the last download of a URL."""
    doc = source_doc(source)
    await db.get_collection("sources").replace_one({"_id": doc["_id"]}, doc, upsert=True)


async def find_output(
    db: AsyncDatabase[Doc], owner: str, policy: str, input_hash: str, now: float
) -> Output | None:
    """Return the output of this input, marking it used."""
    doc = await db.get_collection("outputs").find_one_and_update(
        {"owner": owner, "policy": policy, "inputHash": input_hash},
        {"$set": {"lastUsedAt": now}},
        return_document=ReturnDocument.AFTER,
    )
    return None if doc is None else to_output(doc)


async def add_output(db: AsyncDatabase[Doc], output: Output) -> Output:
    """Insert the output unless its input already has one (the unique index decides a
    race); return the one kept."""
    outputs = db.get_collection("outputs")
    try:
        await outputs.insert_one(output_doc(output))
        return output
    except DuplicateKeyError:
        kept = await find_output(
            db, output.owner, output.policy, output.input_hash, output.last_used_at
        )
        assert kept is not None  # the duplicate key is that very output
        return kept


async def delete_unreferenced(db: AsyncDatabase[Doc], used_before: float, limit: int) -> int:
    """Delete outputs unused since ``used_before`` that no image references, and the
    sources that led only to them."""
    outputs, images = db.get_collection("outputs"), db.get_collection("images")
    gone = 0
    stale = outputs.find({"lastUsedAt": {"$lt": used_before}}, projection={"_id": 1})
    for doc in await stale.limit(limit).to_list():
        if await images.find_one({"outputId": doc["_id"]}, projection={"_id": 1}) is not None:
            continue
        deleted = await outputs.find_one_and_delete(
            {"_id": doc["_id"], "lastUsedAt": {"$lt": used_before}}
        )
        if deleted is None:
            continue
        gone += 1
        owner, input_hash = deleted["owner"], deleted["inputHash"]
        if await outputs.find_one({"owner": owner, "inputHash": input_hash}) is None:
            await db.get_collection("sources").delete_many(
                {"owner": owner, "inputHash": input_hash}
            )
    return gone
