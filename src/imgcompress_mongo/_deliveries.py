"""Webhook deliveries on MongoDB: one document each, leased with fencing tokens."""

from __future__ import annotations

import contextlib

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from imgcompress_core.errors import LeaseLost
from imgcompress_core.model import DeliveryClaim, DeliveryOutcome, DeliveryState

from ._documents import Doc, delivery_doc

__all__ = ["claim_deliveries", "insert_delivery", "record_delivery"]


async def insert_delivery(
    deliveries: AsyncCollection[Doc], request: Doc, delivery_id: str, now: float
) -> None:
    """Create a finished request's delivery; a second insert (a race) is a no-op."""
    with contextlib.suppress(DuplicateKeyError):
        await deliveries.insert_one(delivery_doc(request, delivery_id, now))


async def claim_deliveries(
    deliveries: AsyncCollection[Doc], now: float, limit: int, lease_seconds: float, token: str
) -> list[DeliveryClaim]:
    """Lease up to ``limit`` due deliveries, one atomic find_one_and_update each."""
    claims: list[DeliveryClaim] = []
    while len(claims) < limit:
        doc = await deliveries.find_one_and_update(
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
    deliveries: AsyncCollection[Doc], claim: DeliveryClaim, outcome: DeliveryOutcome
) -> None:
    """Record one attempt, fenced by the claim's token; raise LeaseLost if it was taken."""
    result = await deliveries.update_one(
        {"_id": claim.delivery_id, "leaseToken": claim.token},
        {
            "$set": {
                "state": outcome.state.value,
                "lastError": outcome.last_error,
                "deliveredAt": outcome.delivered_at,
                "nextAttemptAt": outcome.next_attempt_at,
                "leaseToken": None,
                "leaseExpiresAt": 0.0,
            }
        },
    )
    if result.matched_count != 1:
        raise LeaseLost.delivery(claim.delivery_id)
