"""The image queue on MongoDB: one flat document per image, leased with fencing tokens."""

from __future__ import annotations

from collections.abc import Sequence

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from imgcompress_core.model import Claim, Failure, ImageChange, ImageState, RequestStatus

from ._documents import Doc

__all__ = ["claim", "claimable", "expire", "finish", "renew"]

_ORDER = [("row", ASCENDING), ("position", ASCENDING)]
_WORKING = ImageState.WORKING.value


def claimable_query(
    request_id: str, now: float, max_attempts: int, skip_hosts: frozenset[str]
) -> list[Doc]:
    """Return the filters for a request's claimable images: expired leases, then due
    queued images (never of the hosts in ``skip_hosts``)."""
    hosts: Doc = {"host": {"$nin": sorted(skip_hosts)}} if skip_hosts else {}
    return [
        {
            "requestId": request_id,
            "state": _WORKING,
            "leaseExpiresAt": {"$lte": now},
            "attempts": {"$lt": max_attempts},
            **hosts,
        },
        {
            "requestId": request_id,
            "state": ImageState.QUEUED.value,
            "notBefore": {"$lte": now},
            **hosts,
        },
    ]


async def expire(
    images: AsyncCollection[Doc], now: float, max_attempts: int, failure: Failure
) -> None:
    """Fail working images whose lease expired after ``max_attempts`` attempts."""
    await images.update_many(
        {"state": _WORKING, "leaseExpiresAt": {"$lte": now}, "attempts": {"$gte": max_attempts}},
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


async def claimable(
    requests: AsyncCollection[Doc],
    images: AsyncCollection[Doc],
    now: float,
    limit: int,
    skip_hosts: frozenset[str],
) -> list[tuple[str, str]]:
    """Return, per owner, up to ``limit`` Pending requests with a claimable image, least
    recently claimed first.

    Looks at no more than ``8 * limit + 64`` Pending requests per call, so a poll stays
    cheap however many requests wait; the ones skipped come first once they are the least
    recently claimed.
    """
    found: list[tuple[str, str]] = []
    per_owner: dict[str, int] = {}
    pending = requests.find(
        {"status": RequestStatus.PENDING.value}, projection={"_id": 1, "owner": 1}
    ).sort("claimedAt", ASCENDING)
    for doc in await pending.limit(8 * limit + 64).to_list():
        owner = doc.get("owner", "")
        if per_owner.get(owner, 0) >= limit:
            continue
        for query in claimable_query(doc["_id"], now, 2**31, skip_hosts):
            if await images.find_one(query, projection={"_id": 1}) is not None:
                per_owner[owner] = per_owner.get(owner, 0) + 1
                found.append((doc["_id"], owner))
                break
    return found


async def claim(
    images: AsyncCollection[Doc],
    request_id: str,
    *,
    now: float,
    worker: str,
    token: str,
    limit: int,
    lease_seconds: float,
    max_attempts: int,
    skip_hosts: frozenset[str],
) -> list[Claim]:
    """Lease up to ``limit`` of a request's images, one atomic find_one_and_update each,
    so no two callers in any process get the same image."""
    lease: Doc = {
        "$set": {
            "state": _WORKING,
            "leaseOwner": worker,
            "leaseToken": token,
            "leaseExpiresAt": now + lease_seconds,
            "updatedAt": now,
        },
        "$inc": {"attempts": 1},
    }
    claims: list[Claim] = []
    for query in claimable_query(request_id, now, max_attempts, skip_hosts):
        while len(claims) < limit:
            doc = await images.find_one_and_update(
                query, lease, sort=_ORDER, return_document=ReturnDocument.AFTER
            )
            if doc is None:
                break
            claims.append(Claim(doc["_id"], request_id, doc["url"], doc["attempts"], token))
    return claims


async def renew(
    images: AsyncCollection[Doc], claims: Sequence[Claim], expires: float
) -> list[Claim]:
    """Move the lease expiry of the claims still held; return those."""
    held = []
    for held_claim in claims:
        result = await images.update_one(
            {"_id": held_claim.image_id, "leaseToken": held_claim.token, "state": _WORKING},
            {"$set": {"leaseExpiresAt": expires}},
        )
        if result.matched_count == 1:
            held.append(held_claim)
    return held


def _fields(target: ImageState, change: ImageChange, now: float) -> Doc:
    failure = change.failure
    fields: Doc = {
        "state": target.value,
        "failureCode": failure.code if failure else None,
        "failureMessage": failure.message if failure else None,
        "updatedAt": now,
    }
    if target is ImageState.QUEUED:
        fields |= {
            "notBefore": change.not_before,
            "leaseOwner": None,
            "leaseToken": None,
            "leaseExpiresAt": 0.0,
        }
    if change.output is not None:
        out = change.output
        fields |= {
            "blobKey": out.blob_key,
            "outputId": out.output_id,
            "reused": change.reused,
            "contentType": out.content_type,
            "inputBytes": out.input_bytes,
            "outputBytes": out.output_bytes,
            "width": out.width,
            "height": out.height,
            "note": out.note,
            "quality": out.quality,
            "score": out.score,
            "warnings": list(out.warnings),
        }
    return fields


async def finish(
    images: AsyncCollection[Doc],
    held: Claim,
    target: ImageState,
    sources: frozenset[ImageState],
    change: ImageChange,
    now: float,
) -> tuple[ImageState, str | None] | None:
    """Move a claimed image to ``target`` with one update conditional on its token and the
    ``sources`` states; return None if it moved, else its state and token as they are."""
    states = sorted(state.value for state in sources)
    result = await images.update_one(
        {"_id": held.image_id, "leaseToken": held.token, "state": {"$in": states}},
        {"$set": _fields(target, change, now)},
    )
    if result.matched_count == 1:
        return None
    doc = await images.find_one({"_id": held.image_id}, projection={"state": 1, "leaseToken": 1})
    if doc is None:
        return ImageState.FAILED, None
    return ImageState(doc["state"]), doc.get("leaseToken")
