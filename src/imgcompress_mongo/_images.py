"""Image claims on MongoDB: atomic one-document leases with fencing tokens."""

from __future__ import annotations

from collections.abc import Sequence

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from imgcompress_core.errors import LeaseLost
from imgcompress_core.model import Claim, ImageState
from imgcompress_core.workflow import WORKER_LOST, check_transition, sources

from ._documents import NO_BYTES, Doc

__all__ = ["claim", "finish", "renew"]


async def claim(
    images: AsyncCollection[Doc],
    now: float,
    *,
    owner: str,
    token: str,
    limit: int,
    lease_seconds: float,
    max_attempts: int,
) -> list[Claim]:
    """Lease up to ``limit`` images: expired leases first, then the queue in ``seq`` order.

    Images whose lease expired after ``max_attempts`` attempts are failed (worker_lost)
    first. Every lease is its own ``find_one_and_update``, so no two callers, in any
    process, get the same image.
    """
    working = ImageState.WORKING.value
    expired: Doc = {"state": working, "leaseExpiresAt": {"$lte": now}}
    await images.update_many(
        {**expired, "attempts": {"$gte": max_attempts}},
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
    lease: Doc = {
        "$set": {
            "state": working,
            "leaseOwner": owner,
            "leaseToken": token,
            "leaseExpiresAt": now + lease_seconds,
            "updatedAt": now,
        },
        "$inc": {"attempts": 1},
    }
    queued: Doc = {"state": ImageState.QUEUED.value, "notBefore": {"$lte": now}}
    claims: list[Claim] = []
    for query in ({**expired, "attempts": {"$lt": max_attempts}}, queued):
        while len(claims) < limit:
            doc = await images.find_one_and_update(
                query,
                lease,
                sort=[("seq", ASCENDING)],
                projection=NO_BYTES,
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                break
            claims.append(Claim(doc["_id"], doc["requestId"], doc["url"], doc["attempts"], token))
    return claims


async def renew(
    images: AsyncCollection[Doc], claims: Sequence[Claim], expires: float
) -> list[Claim]:
    """Move the lease expiry of the claims still held; return those."""
    held = []
    for held_claim in claims:
        result = await images.update_one(
            {
                "_id": held_claim.image_id,
                "leaseToken": held_claim.token,
                "state": ImageState.WORKING.value,
            },
            {"$set": {"leaseExpiresAt": expires}},
        )
        if result.matched_count == 1:
            held.append(held_claim)
    return held


async def finish(
    images: AsyncCollection[Doc], held: Claim, target: ImageState, fields: Doc, now: float
) -> None:
    """Move a claimed image to ``target`` with one conditional update, or raise why not.

    The update matches only the claim's token and the states the workflow allows moving
    to ``target`` from. When it matches nothing: another token raises LeaseLost; the same
    claim completing twice is a no-op; a state that may not move raises IllegalTransition.
    """
    states = sorted(state.value for state in sources(target))
    result = await images.update_one(
        {"_id": held.image_id, "leaseToken": held.token, "state": {"$in": states}},
        {"$set": {**fields, "state": target.value, "updatedAt": now}},
    )
    if result.matched_count == 1:
        return
    doc = await images.find_one({"_id": held.image_id}, projection={"state": 1, "leaseToken": 1})
    if doc is None or doc.get("leaseToken") != held.token:
        raise LeaseLost(f"image {held.image_id} is no longer held by this claim")
    if target is ImageState.DONE and doc["state"] == ImageState.DONE.value:
        return  # the same claim completing twice: already done
    check_transition(ImageState(doc["state"]), target)
    raise LeaseLost(f"image {held.image_id} changed while it was being updated")
