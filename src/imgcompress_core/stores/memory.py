"""An in-memory Storage: for tests, embedding and one-shot runs (`imgcompress process`).

It keeps everything in dicts inside one process and one event loop. No method awaits
between reading and writing, so each is atomic with respect to other tasks. It passes
the same contract suite as the durable stores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import time
from collections.abc import Callable, Sequence

from ..errors import IdempotencyConflict, ImageNotFound, LeaseLost, RequestNotFound
from ..model import (
    Claim,
    Delivery,
    DeliveryClaim,
    DeliveryState,
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
from ..workflow import (
    CANCELLED,
    WORKER_LOST,
    check_transition,
    delivery_outcome,
    final_status,
)

__all__ = ["MemoryStorage"]


@dataclasses.dataclass(slots=True)
class _Lease:
    token: str
    expires_at: float
    not_before: float = 0.0


def _same_upload(earlier: tuple[str, str], request: NewRequest) -> str:
    """Return the earlier request's id, or raise if the key came with another body."""
    request_id, body_hash = earlier
    if body_hash != request.body_hash:
        raise IdempotencyConflict("this Idempotency-Key was already used for a different upload")
    return request_id


class MemoryStorage:
    """Storage in process memory; everything is gone when the process ends."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._requests: dict[str, RequestRecord] = {}
        self._products: dict[str, list[ProductRecord]] = {}
        self._images: dict[str, ImageRecord] = {}
        self._by_request: dict[str, list[str]] = {}
        self._leases: dict[str, _Lease] = {}
        self._data: dict[str, StoredImage] = {}
        self._deliveries: dict[str, Delivery] = {}
        self._delivery_leases: dict[str, _Lease] = {}
        self._queued: dict[str, None] = {}  # queued image ids in claim order
        self._working: dict[str, None] = {}
        self._remaining: dict[str, int] = {}
        self._idempotency: dict[str, tuple[str, str]] = {}

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def ping(self) -> None:
        """Always reachable."""

    async def create_request(self, request: NewRequest) -> str:
        """Store a request with its products and queued images (or find its earlier twin)."""
        if request.idempotency_key is not None:
            earlier = self._idempotency.get(request.idempotency_key)
            if earlier is not None:
                return _same_upload(earlier, request)
            self._idempotency[request.idempotency_key] = (request.request_id, request.body_hash)
        now = self._clock()
        self._requests[request.request_id] = RequestRecord(
            request_id=request.request_id,
            status=RequestStatus.PENDING,
            columns=request.columns,
            webhook_url=request.webhook_url,
            created_at=request.created_at,
            updated_at=now,
            finished_at=None,
            total_images=len(request.images),
            base_url=request.base_url,
            owner=request.owner,
        )
        self._remaining[request.request_id] = len(request.images)
        self._products[request.request_id] = [
            ProductRecord(request.request_id, p.row, p.serial, p.name, p.cells)
            for p in request.products
        ]
        ids = []
        for image in request.images:
            self._images[image.image_id] = ImageRecord(
                image_id=image.image_id,
                request_id=request.request_id,
                row=image.row,
                position=image.position,
                url=image.url,
                state=ImageState.QUEUED,
                attempts=0,
                updated_at=now,
            )
            self._leases[image.image_id] = _Lease(token="", expires_at=0.0)
            self._queued[image.image_id] = None
            ids.append(image.image_id)
        self._by_request[request.request_id] = ids
        return request.request_id

    async def get_request(self, request_id: str) -> RequestRecord:
        """Return a request or raise RequestNotFound."""
        try:
            return self._requests[request_id]
        except KeyError:
            raise RequestNotFound(request_id) from None

    async def list_products(self, request_id: str) -> list[ProductRecord]:
        """Return a request's products in row order."""
        await self.get_request(request_id)
        return sorted(self._products[request_id], key=lambda p: p.row)

    async def list_images(self, request_id: str) -> list[ImageRecord]:
        """Return a request's images ordered by row, then position."""
        await self.get_request(request_id)
        images = [self._images[i] for i in self._by_request[request_id]]
        return sorted(images, key=lambda i: (i.row, i.position))

    async def progress(self, request_id: str) -> Progress:
        """Count a request's images by state."""
        await self.get_request(request_id)
        counts = dict.fromkeys(ImageState, 0)
        for image_id in self._by_request[request_id]:
            counts[self._images[image_id].state] += 1
        return Progress(
            total=len(self._by_request[request_id]),
            queued=counts[ImageState.QUEUED],
            working=counts[ImageState.WORKING],
            done=counts[ImageState.DONE],
            failed=counts[ImageState.FAILED],
        )

    async def claim_images(
        self, owner: str, limit: int, lease_seconds: float, max_attempts: int
    ) -> list[Claim]:
        """Lease up to ``limit`` images: expired leases first, then the queue in order."""
        now = self._clock()
        expired = [i for i in self._working if self._leases[i].expires_at <= now]
        for image_id in expired:
            if self._images[image_id].attempts >= max_attempts:
                self._set_final(self._images[image_id], ImageState.FAILED, WORKER_LOST)
                self._leases[image_id] = _Lease(token="", expires_at=0.0)  # fences the old claim
        candidates = [i for i in expired if i in self._working]
        candidates += [i for i in self._queued if self._leases[i].not_before <= now]
        claims: list[Claim] = []
        token = new_id()
        for image_id in candidates[:limit]:
            image = self._images[image_id]
            self._queued.pop(image_id, None)
            self._working[image_id] = None
            self._leases[image_id] = _Lease(token=token, expires_at=now + lease_seconds)
            updated = dataclasses.replace(
                image, state=ImageState.WORKING, attempts=image.attempts + 1, updated_at=now
            )
            self._images[image_id] = updated
            claims.append(Claim(image_id, image.request_id, image.url, updated.attempts, token))
        return claims

    async def renew_claims(self, claims: Sequence[Claim], lease_seconds: float) -> list[Claim]:
        """Extend the leases these claims still hold; return those."""
        expires = self._clock() + lease_seconds
        held = []
        for claim in claims:
            lease = self._leases.get(claim.image_id)
            working = self._images[claim.image_id].state is ImageState.WORKING
            if lease is not None and lease.token == claim.token and working:
                lease.expires_at = expires
                held.append(claim)
        return held

    def _set_final(self, image: ImageRecord, state: ImageState, failure: Failure | None) -> None:
        """Record a final state and count it against the request."""
        self._working.pop(image.image_id, None)
        self._images[image.image_id] = dataclasses.replace(
            image, state=state, failure=failure, updated_at=self._clock()
        )
        self._remaining[image.request_id] -= 1

    def _owned(self, claim: Claim, target: ImageState) -> ImageRecord:
        image = self._images.get(claim.image_id)
        lease = self._leases.get(claim.image_id)
        if image is None or lease is None or lease.token != claim.token:
            raise LeaseLost(f"image {claim.image_id} is no longer held by this claim")
        check_transition(image.state, target)
        return image

    async def complete_image(self, claim: Claim, result: ImageResult) -> None:
        """Store the processed bytes and mark the image done."""
        image = self._images.get(claim.image_id)
        same_claim = self._leases.get(claim.image_id, _Lease("", 0.0)).token == claim.token
        if image is not None and image.state is ImageState.DONE and same_claim:
            return  # the same claim finishing twice: already done
        image = self._owned(claim, ImageState.DONE)
        etag = hashlib.sha256(result.data).hexdigest()[:32]
        self._data[claim.image_id] = StoredImage(
            claim.image_id, result.data, result.content_type, etag
        )
        self._set_final(image, ImageState.DONE, None)
        self._images[claim.image_id] = dataclasses.replace(
            self._images[claim.image_id],
            input_bytes=result.input_bytes,
            output_bytes=len(result.data),
            width=result.width,
            height=result.height,
            content_type=result.content_type,
            note=result.note,
        )

    async def fail_image(self, claim: Claim, failure: Failure) -> None:
        """Mark the image failed for good."""
        self._set_final(self._owned(claim, ImageState.FAILED), ImageState.FAILED, failure)

    async def retry_image(self, claim: Claim, failure: Failure, not_before: float) -> None:
        """Queue the image again after ``not_before``."""
        image = self._owned(claim, ImageState.QUEUED)
        self._working.pop(claim.image_id, None)
        self._queued[claim.image_id] = None
        self._leases[claim.image_id] = _Lease(token="", expires_at=0.0, not_before=not_before)
        self._images[claim.image_id] = dataclasses.replace(
            image, state=ImageState.QUEUED, failure=failure, updated_at=self._clock()
        )

    async def finalize_request(self, request_id: str) -> RequestRecord | None:
        """Set the final status once; queue the webhook delivery in the same step."""
        request = await self.get_request(request_id)
        if request.status is not RequestStatus.PENDING or self._remaining[request_id] > 0:
            return None
        status = final_status(await self.progress(request_id))
        if status is None:
            return None
        now = self._clock()
        final = dataclasses.replace(request, status=status, updated_at=now, finished_at=now)
        self._requests[request_id] = final
        if final.webhook_url:
            delivery = Delivery(
                delivery_id=new_id(),
                request_id=request_id,
                url=final.webhook_url,
                state=DeliveryState.PENDING,
                attempts=0,
                next_attempt_at=now,
            )
            self._deliveries[delivery.delivery_id] = delivery
            self._delivery_leases[delivery.delivery_id] = _Lease(token="", expires_at=0.0)
        return final

    async def unfinalized_requests(self, limit: int) -> list[str]:
        """Return Pending requests with no image left to finish."""
        pending = (
            request_id
            for request_id, request in self._requests.items()
            if request.status is RequestStatus.PENDING and self._remaining[request_id] <= 0
        )
        return list(itertools.islice(pending, limit))

    async def queue_depth(self) -> int:
        """Count queued images."""
        return len(self._queued)

    async def cancel_request(self, request_id: str) -> None:
        """Fail every unfinished image with ``cancelled``."""
        await self.get_request(request_id)
        for image_id in self._by_request[request_id]:
            image = self._images[image_id]
            if image.state in (ImageState.QUEUED, ImageState.WORKING):
                self._queued.pop(image_id, None)
                self._set_final(image, ImageState.FAILED, CANCELLED)
                self._leases[image_id] = _Lease(token="", expires_at=0.0)

    async def delete_request(self, request_id: str) -> None:
        """Remove the request and everything stored for it."""
        await self.get_request(request_id)
        for image_id in self._by_request.pop(request_id):
            for table in (self._images, self._leases, self._data, self._queued, self._working):
                table.pop(image_id, None)
        for delivery in [d for d in self._deliveries.values() if d.request_id == request_id]:
            del self._deliveries[delivery.delivery_id]
            del self._delivery_leases[delivery.delivery_id]
        del self._requests[request_id], self._products[request_id], self._remaining[request_id]
        for key in [k for k, (rid, _) in self._idempotency.items() if rid == request_id]:
            del self._idempotency[key]

    async def finished_before(self, cutoff: float, limit: int) -> list[str]:
        """Return final requests that finished before ``cutoff``."""
        old = (
            r.request_id
            for r in self._requests.values()
            if r.finished_at is not None and r.finished_at < cutoff
        )
        return list(itertools.islice(old, limit))

    async def get_image_data(self, image_id: str) -> StoredImage:
        """Return a processed image's bytes or raise ImageNotFound."""
        try:
            return self._data[image_id]
        except KeyError:
            raise ImageNotFound(image_id) from None

    async def claim_deliveries(
        self, owner: str, limit: int, lease_seconds: float
    ) -> list[DeliveryClaim]:
        """Lease up to ``limit`` due deliveries."""
        now = self._clock()
        claims: list[DeliveryClaim] = []
        for delivery in self._deliveries.values():
            if len(claims) >= limit:
                break
            lease = self._delivery_leases[delivery.delivery_id]
            due = delivery.next_attempt_at <= now and lease.expires_at <= now
            if delivery.state is not DeliveryState.PENDING or not due:
                continue
            token = new_id()
            self._delivery_leases[delivery.delivery_id] = _Lease(token, now + lease_seconds)
            updated = dataclasses.replace(delivery, attempts=delivery.attempts + 1)
            self._deliveries[delivery.delivery_id] = updated
            claims.append(
                DeliveryClaim(
                    delivery.delivery_id, delivery.request_id, delivery.url, updated.attempts, token
                )
            )
        return claims

    async def record_delivery(
        self,
        claim: DeliveryClaim,
        *,
        delivered: bool,
        error: str | None,
        next_attempt_at: float | None,
    ) -> None:
        """Record one delivery attempt."""
        delivery = self._deliveries.get(claim.delivery_id)
        lease = self._delivery_leases.get(claim.delivery_id)
        if delivery is None or lease is None or lease.token != claim.token:
            raise LeaseLost(f"delivery {claim.delivery_id} is no longer held by this claim")
        now = self._clock()
        state, when = delivery_outcome(delivered, next_attempt_at, now)
        self._delivery_leases[claim.delivery_id] = _Lease(token="", expires_at=0.0)
        self._deliveries[claim.delivery_id] = dataclasses.replace(
            delivery,
            state=state,
            last_error=error,
            delivered_at=when,
            next_attempt_at=next_attempt_at if next_attempt_at is not None else now,
        )

    async def list_deliveries(self, request_id: str) -> list[Delivery]:
        """Return a request's webhook deliveries."""
        await self.get_request(request_id)
        return [d for d in self._deliveries.values() if d.request_id == request_id]
