"""An in-memory store: for tests, embedding and one-shot runs (`imgcompress process`).

It keeps everything in dicts inside one process and one event loop. No method awaits
between reading and writing, so each is atomic with respect to other tasks. It plays
every storage role and passes the same contract suite and model test as the durable
stores; the rules are the workflow's.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Mapping, Sequence

from ..errors import ImageNotFound, LeaseLost, RequestNotFound
from ..model import (
    Claim,
    Delivery,
    DeliveryClaim,
    DeliveryOutcome,
    DeliveryState,
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
from ._memory_cache import MemoryBlobsAndCache

__all__ = ["MemoryStorage"]


@dataclasses.dataclass(slots=True)
class _Lease:
    token: str | None = None
    expires_at: float = 0.0
    not_before: float = 0.0


class MemoryStorage(MemoryBlobsAndCache):
    """Every storage role in process memory; everything is gone when the process ends."""

    def __init__(self) -> None:
        super().__init__()
        self._requests: dict[str, RequestRecord] = {}
        self._products: dict[str, list[ProductRecord]] = {}
        self._images: dict[str, ImageRecord] = {}
        self._by_request: dict[str, list[str]] = {}  # image ids in row, position order
        self._leases: dict[str, _Lease] = {}
        self._hosts: dict[str, str] = {}  # image id -> the host it is downloaded from
        # Per request, the ids of its queued and of its working images, in claim order.
        self._queued: dict[str, dict[str, None]] = {}
        self._working: dict[str, dict[str, None]] = {}
        self._claimed_at: dict[str, float] = {}  # request id -> when it was last served
        self._deliveries: dict[str, Delivery] = {}
        self._delivery_leases: dict[str, _Lease] = {}
        self._keys: dict[str, KeyHolder] = {}

    def _move(self, image: ImageRecord, **changes: object) -> None:
        """Replace an image record, keeping the per-request queued and working sets right."""
        updated = dataclasses.replace(image, **changes)  # type: ignore[arg-type]
        rid, image_id = image.request_id, image.image_id
        self._queued[rid].pop(image_id, None)
        self._working[rid].pop(image_id, None)
        if updated.state is ImageState.QUEUED:
            self._queued[rid][image_id] = None
        elif updated.state is ImageState.WORKING:
            self._working[rid][image_id] = None
        self._images[image_id] = updated

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def ping(self) -> None:
        """Always reachable."""

    # -- requests ---------------------------------------------------------------------

    async def create_request(self, request: NewRequest) -> KeyHolder | None:
        """Store a request with its products and queued images (or return the key's holder)."""
        if request.idempotency_key is not None:
            holder = self._keys.get(request.idempotency_key)
            if holder is not None:
                return holder
            self._keys[request.idempotency_key] = KeyHolder(request.request_id, request.body_hash)
        rid = request.request_id
        self._requests[rid] = RequestRecord(
            request_id=rid,
            status=RequestStatus.PENDING,
            columns=request.columns,
            webhook_url=request.webhook_url,
            created_at=request.created_at,
            updated_at=request.created_at,
            finished_at=None,
            total_images=len(request.images),
            base_url=request.base_url,
            owner=request.owner,
            policy=request.policy,
        )
        self._claimed_at[rid] = 0.0
        self._products[rid] = sorted(
            (ProductRecord(rid, p.row, p.serial, p.name, p.cells) for p in request.products),
            key=lambda p: p.row,
        )
        for image in request.images:
            self._images[image.image_id] = ImageRecord(
                image_id=image.image_id,
                request_id=rid,
                row=image.row,
                position=image.position,
                url=image.url,
                state=ImageState.QUEUED,
                attempts=0,
                updated_at=request.created_at,
            )
            self._leases[image.image_id] = _Lease()
            self._hosts[image.image_id] = image.host
        ordered = sorted(request.images, key=lambda i: (i.row, i.position))
        self._by_request[rid] = [i.image_id for i in ordered]
        self._queued[rid] = dict.fromkeys(self._by_request[rid])
        self._working[rid] = {}
        return None

    async def get_request(self, request_id: str) -> RequestRecord:
        """Return a request or raise RequestNotFound."""
        try:
            return self._requests[request_id]
        except KeyError:
            raise RequestNotFound(request_id) from None

    async def list_requests(
        self, owner: str | None, before: tuple[float, str] | None, limit: int
    ) -> list[RequestRecord]:
        """Return requests newest first, older than ``before``, only ``owner``'s if given."""
        found = (
            r
            for r in sorted(
                self._requests.values(), key=lambda r: (r.created_at, r.request_id), reverse=True
            )
            if (owner is None or r.owner == owner)
            and (before is None or (r.created_at, r.request_id) < before)
        )
        return list(itertools.islice(found, limit))

    async def reopen_request(self, request_id: str, keep_codes: frozenset[str], now: float) -> int:
        """Queue the failed images (codes not in ``keep_codes``) of a final request again."""
        request = await self.get_request(request_id)
        if request.status is RequestStatus.PENDING:
            return 0
        failed = [
            self._images[i]
            for i in self._by_request[request_id]
            if self._images[i].state is ImageState.FAILED
            and (self._images[i].failure is None or self._images[i].failure.code not in keep_codes)  # type: ignore[union-attr]
        ]
        for image in failed:
            self._move(image, state=ImageState.QUEUED, attempts=0, failure=None, updated_at=now)
            self._leases[image.image_id] = _Lease()
        if failed:
            self._requests[request_id] = dataclasses.replace(
                request,
                status=RequestStatus.PENDING,
                finished_at=None,
                updated_at=now,
                round=request.round + 1,
            )
        return len(failed)

    async def list_products(
        self, request_id: str, *, after_row: int = 0, limit: int | None = None
    ) -> list[ProductRecord]:
        """Return a request's products in row order, after ``after_row``, at most ``limit``."""
        await self.get_request(request_id)
        later = (p for p in self._products[request_id] if p.row > after_row)
        return list(itertools.islice(later, limit))

    async def list_images(
        self, request_id: str, *, rows: tuple[int, int] | None = None
    ) -> list[ImageRecord]:
        """Return a request's images ordered by row, then position (only ``rows``, if given)."""
        await self.get_request(request_id)
        first, last = rows or (-(2**62), 2**62)
        images = (self._images[i] for i in self._by_request[request_id])
        return [i for i in images if first <= i.row <= last]

    async def get_image(self, image_id: str) -> ImageRecord:
        """Return one image or raise ImageNotFound."""
        try:
            return self._images[image_id]
        except KeyError:
            raise ImageNotFound(image_id) from None

    async def count_images(self, request_id: str) -> Mapping[ImageState, int]:
        """Count a request's images by state."""
        await self.get_request(request_id)
        counts = dict.fromkeys(ImageState, 0)
        for image_id in self._by_request[request_id]:
            counts[self._images[image_id].state] += 1
        return counts

    async def has_images_in(self, request_id: str, states: frozenset[ImageState]) -> bool:
        """Return True if any of the request's images is in ``states``."""
        await self.get_request(request_id)
        if states <= {ImageState.QUEUED, ImageState.WORKING}:
            return any(
                self._images[i].state in states
                for i in itertools.chain(self._queued[request_id], self._working[request_id])
            )
        return any(self._images[i].state in states for i in self._by_request[request_id])

    async def finalize_request(
        self, request_id: str, status: RequestStatus, now: float, delivery_id: str | None
    ) -> RequestRecord | None:
        """Set the final status if still Pending, queueing the delivery in the same step."""
        request = await self.get_request(request_id)
        if request.status is not RequestStatus.PENDING:
            return None
        final = dataclasses.replace(request, status=status, updated_at=now, finished_at=now)
        self._requests[request_id] = final
        if delivery_id is not None and request.webhook_url and delivery_id not in self._deliveries:
            self._deliveries[delivery_id] = Delivery(
                delivery_id, request_id, request.webhook_url, DeliveryState.PENDING, 0, now
            )
            self._delivery_leases[delivery_id] = _Lease()
        return final

    async def unfinalized_requests(self, limit: int, now: float) -> list[str]:
        """Return Pending requests with no unfinished image."""
        stuck = (
            rid
            for rid, request in self._requests.items()
            if request.status is RequestStatus.PENDING
            and not self._queued[rid]
            and not self._working[rid]
        )
        return list(itertools.islice(stuck, limit))

    async def cancel_images(
        self, request_id: str, states: frozenset[ImageState], failure: Failure, now: float
    ) -> None:
        """Fail the request's images in ``states``; their leases end."""
        await self.get_request(request_id)
        unfinished = itertools.chain(self._queued[request_id], self._working[request_id])
        for image_id in list(unfinished):
            image = self._images[image_id]
            if image.state in states:
                self._move(image, state=ImageState.FAILED, failure=failure, updated_at=now)
                self._leases[image_id] = _Lease()

    async def delete_request(self, request_id: str) -> None:
        """Remove the request and everything recorded for it."""
        await self.get_request(request_id)
        for image_id in self._by_request.pop(request_id):
            del self._images[image_id], self._leases[image_id], self._hosts[image_id]
        for delivery in [d for d in self._deliveries.values() if d.request_id == request_id]:
            del self._deliveries[delivery.delivery_id]
            del self._delivery_leases[delivery.delivery_id]
        del self._requests[request_id], self._products[request_id]
        del self._claimed_at[request_id], self._queued[request_id], self._working[request_id]
        for key in [k for k, holder in self._keys.items() if holder.request_id == request_id]:
            del self._keys[key]

    async def finished_before(self, cutoff: float, limit: int) -> list[str]:
        """Return final requests that finished before ``cutoff``."""
        old = (
            r.request_id
            for r in self._requests.values()
            if r.finished_at is not None and r.finished_at < cutoff
        )
        return list(itertools.islice(old, limit))

    async def referenced_blobs(self, keys: Sequence[str]) -> set[str]:
        """Return the keys some image or cached output references."""
        wanted = set(keys)
        used = {i.blob_key for i in self._images.values() if i.blob_key in wanted}
        used |= {o.blob_key for o in self._outputs.values() if o.blob_key in wanted}
        return {key for key in used if key}

    # -- images -----------------------------------------------------------------------

    async def expire_leases(self, now: float, max_attempts: int, failure: Failure) -> None:
        """Fail working images whose lease expired after ``max_attempts`` attempts."""
        working = [i for ids in self._working.values() for i in ids]
        for image_id in working:
            image = self._images[image_id]
            if self._leases[image_id].expires_at <= now and image.attempts >= max_attempts:
                self._move(image, state=ImageState.FAILED, failure=failure, updated_at=now)
                self._leases[image_id] = _Lease()

    def _claimable(
        self, request_id: str, now: float, max_attempts: int, skip: frozenset[str] = frozenset()
    ) -> Iterator[str]:
        """Yield the request's claimable images: expired leases first, then due queued."""
        for image_id in self._working[request_id]:
            image = self._images[image_id]
            if (
                self._leases[image_id].expires_at <= now
                and image.attempts < max_attempts
                and self._hosts[image_id] not in skip
            ):
                yield image_id
        for image_id in self._queued[request_id]:
            if self._leases[image_id].not_before <= now and self._hosts[image_id] not in skip:
                yield image_id

    async def claimable_requests(
        self, now: float, limit: int, skip_hosts: frozenset[str]
    ) -> list[tuple[str, str]]:
        """Return, per owner, up to ``limit`` Pending requests with a claimable image,
        least recently claimed first."""
        pending = sorted(
            (rid for rid, r in self._requests.items() if r.status is RequestStatus.PENDING),
            key=self._claimed_at.__getitem__,
        )
        per_owner: dict[str, int] = {}
        found = []
        for rid in pending:
            owner = self._requests[rid].owner
            claimable = self._claimable(rid, now, 2**31, skip_hosts)
            if per_owner.get(owner, 0) < limit and next(claimable, None):
                per_owner[owner] = per_owner.get(owner, 0) + 1
                found.append((rid, owner))
        return found

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
        """Lease up to ``limit`` of the request's images: expired leases, then the queue."""
        if request_id not in self._requests:
            return []
        claimable = self._claimable(request_id, now, max_attempts, skip_hosts)
        chosen = list(itertools.islice(claimable, limit))
        token = new_id()
        claims = []
        for image_id in chosen:
            image = self._images[image_id]
            self._leases[image_id] = _Lease(token=token, expires_at=now + lease_seconds)
            attempts = image.attempts + 1
            self._move(image, state=ImageState.WORKING, attempts=attempts, updated_at=now)
            claims.append(Claim(image_id, request_id, image.url, attempts, token))
        self._claimed_at[request_id] = now
        return claims

    async def renew_claims(self, claims: Sequence[Claim], expires_at: float) -> list[Claim]:
        """Extend the leases these claims still hold; return those."""
        held = []
        for claim in claims:
            lease = self._leases.get(claim.image_id)
            image = self._images.get(claim.image_id)
            if lease and image and lease.token == claim.token and image.state is ImageState.WORKING:
                lease.expires_at = expires_at
                held.append(claim)
        return held

    async def finish_image(
        self,
        claim: Claim,
        target: ImageState,
        sources: frozenset[ImageState],
        change: ImageChange,
        now: float,
    ) -> tuple[ImageState, str | None] | None:
        """Move the image to ``target`` if the claim owns it and it is in ``sources``."""
        image = self._images.get(claim.image_id)
        if image is None:
            return ImageState.FAILED, None
        lease = self._leases[claim.image_id]
        if lease.token != claim.token or image.state not in sources:
            return image.state, lease.token
        updated = dataclasses.replace(image, state=target, failure=change.failure, updated_at=now)
        if target is ImageState.QUEUED:
            self._leases[claim.image_id] = _Lease(not_before=change.not_before)
        if change.output is not None:
            out = change.output
            updated = dataclasses.replace(
                updated,
                input_bytes=out.input_bytes,
                output_bytes=out.output_bytes,
                width=out.width,
                height=out.height,
                content_type=out.content_type,
                note=out.note,
                blob_key=out.blob_key,
                output_id=out.output_id,
                reused=change.reused,
                quality=out.quality,
                score=out.score,
                warnings=out.warnings,
            )
        self._move(updated)
        return None

    async def queue_depth(self) -> int:
        """Count queued images."""
        return sum(len(ids) for ids in self._queued.values())

    # -- webhook deliveries -----------------------------------------------------------

    async def claim_deliveries(
        self, worker: str, limit: int, *, now: float, lease_seconds: float
    ) -> list[DeliveryClaim]:
        """Lease up to ``limit`` due deliveries."""
        claims: list[DeliveryClaim] = []
        for delivery in list(self._deliveries.values()):
            if len(claims) >= limit:
                break
            lease = self._delivery_leases[delivery.delivery_id]
            due = delivery.next_attempt_at <= now and lease.expires_at <= now
            if delivery.state is not DeliveryState.PENDING or not due:
                continue
            token = new_id()
            self._delivery_leases[delivery.delivery_id] = _Lease(token, now + lease_seconds)
            attempts = delivery.attempts + 1
            self._deliveries[delivery.delivery_id] = dataclasses.replace(
                delivery, attempts=attempts
            )
            claims.append(
                DeliveryClaim(
                    delivery.delivery_id, delivery.request_id, delivery.url, attempts, token
                )
            )
        return claims

    async def record_delivery(self, claim: DeliveryClaim, outcome: DeliveryOutcome) -> None:
        """Record one attempt, fenced by the claim's token."""
        delivery = self._deliveries.get(claim.delivery_id)
        lease = self._delivery_leases.get(claim.delivery_id)
        if delivery is None or lease is None or lease.token != claim.token:
            raise LeaseLost.delivery(claim.delivery_id)
        self._delivery_leases[claim.delivery_id] = _Lease()
        self._deliveries[claim.delivery_id] = dataclasses.replace(
            delivery,
            state=outcome.state,
            last_error=outcome.last_error,
            delivered_at=outcome.delivered_at,
            next_attempt_at=outcome.next_attempt_at,
        )

    async def list_deliveries(self, request_id: str) -> list[Delivery]:
        """Return a request's webhook deliveries."""
        await self.get_request(request_id)
        return [d for d in self._deliveries.values() if d.request_id == request_id]
