"""The state machine and every storage rule, in one place.

Images::

    queued ──claim──▶ working ──complete──▶ done
       ▲                 │ ──fail──────▶ failed
       └────retry────────┘
    queued or working ──cancel──▶ failed (code ``cancelled``)
    failed (not cancelled) ──retry failed, on a final request only──▶ queued (a new round)
    (an expired lease lets another worker claim a working image again: working ─▶ working;
     after ``max_attempts`` expired leases the image fails instead: ``worker_lost``)

A request is ``Pending`` while any of its images is queued or working. When every image
is final it becomes ``Completed`` if at least one image is done, or ``Failed`` if none
is (nothing usable came out of it). A final request never changes status again.

The stores (:mod:`.ports`) only persist and make conditional updates; :class:`Workflow`
is their only caller and decides everything else: which states an update may start
from (:func:`sources`), what a request ends as (:func:`final_status`), how progress is
counted, what an expired lease or a cancel records, that completing twice with the same
claim is a no-op, which request a free worker serves next (:func:`fair_order`), the
webhook delivery's id, a blob's key and an image's ETag.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import (
    BlobNotFound,
    IdempotencyConflict,
    IllegalTransition,
    ImageNotFound,
    LeaseLost,
    RequestNotFinished,
)
from .model import (
    Claim,
    DeliveryClaim,
    DeliveryOutcome,
    DeliveryState,
    Failure,
    ImageChange,
    ImageResult,
    ImageState,
    NewRequest,
    Output,
    Progress,
    RequestRecord,
    RequestStatus,
    Source,
    StoredImage,
    new_id,
)
from .ports import BlobStore, DeliveryQueue, ImageQueue, RequestStore, ReuseCache, Storage

__all__ = [
    "CANCELLABLE",
    "CANCELLED",
    "FINAL_IMAGE_STATES",
    "REUSED_NOT_MODIFIED",
    "REUSED_SAME_CONTENT",
    "TRANSITIONS",
    "UNFINISHED",
    "WORKER_LOST",
    "HostShares",
    "Workflow",
    "blob_key",
    "check_transition",
    "content_hash",
    "delivery_id",
    "delivery_outcome",
    "etag",
    "fair_order",
    "final_status",
    "host_of",
    "progress_of",
    "sources",
]

TRANSITIONS: Mapping[ImageState, frozenset[ImageState]] = {
    ImageState.QUEUED: frozenset({ImageState.WORKING, ImageState.FAILED}),
    ImageState.WORKING: frozenset(
        {ImageState.WORKING, ImageState.DONE, ImageState.FAILED, ImageState.QUEUED}
    ),
    ImageState.DONE: frozenset(),
    ImageState.FAILED: frozenset(),
}

FINAL_IMAGE_STATES: frozenset[ImageState] = frozenset(
    state for state, targets in TRANSITIONS.items() if not targets
)
UNFINISHED: frozenset[ImageState] = frozenset(ImageState) - FINAL_IMAGE_STATES

# Recorded when an image's lease expired (its worker died) after the last attempt.
WORKER_LOST = Failure(
    "worker_lost",
    "processing this image stopped its worker every time it was tried (max_attempts reached)",
)

# Recorded for every unfinished image of a request that was cancelled.
CANCELLED = Failure("cancelled", "the request was cancelled before this image was processed")


def check_transition(current: ImageState, target: ImageState) -> None:
    """Raise IllegalTransition unless an image may go from ``current`` to ``target``."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"an image cannot go from {current} to {target}")


def sources(target: ImageState) -> frozenset[ImageState]:
    """Return the states from which an image may move to ``target``."""
    return frozenset(state for state, targets in TRANSITIONS.items() if target in targets)


# A cancel fails every image that may still fail.
CANCELLABLE: frozenset[ImageState] = sources(ImageState.FAILED)


def progress_of(counts: Mapping[ImageState, int]) -> Progress:
    """Return a request's progress from its image counts by state."""
    return Progress(
        total=sum(counts.values()),
        queued=counts.get(ImageState.QUEUED, 0),
        working=counts.get(ImageState.WORKING, 0),
        done=counts.get(ImageState.DONE, 0),
        failed=counts.get(ImageState.FAILED, 0),
    )


def final_status(progress: Progress) -> RequestStatus | None:
    """Return what a request ends as, or None while it still has unfinished images."""
    if progress.finished < progress.total:
        return None
    return RequestStatus.COMPLETED if progress.done > 0 else RequestStatus.FAILED


def delivery_id(request_id: str, round: int = 1) -> str:
    """Return the id of the webhook delivery a request's ``round`` ends with (the same on
    every attempt, so receivers can drop duplicates, and fixed, so a store creates it at
    most once; a retry of failed images is a new round with a new delivery)."""
    return f"{request_id}:final" if round == 1 else f"{request_id}:final-{round}"


def delivery_outcome(
    delivered: bool, error: str | None, retry_at: float | None, now: float
) -> DeliveryOutcome:
    """Return what an attempt leaves: delivered is final; a failure with no next attempt is
    given up (failed); any other failure stays pending until ``retry_at``."""
    if delivered:
        return DeliveryOutcome(DeliveryState.DELIVERED, None, now, now)
    if retry_at is None:
        return DeliveryOutcome(DeliveryState.FAILED, error, None, now)
    return DeliveryOutcome(DeliveryState.PENDING, error, None, retry_at)


def blob_key(data: bytes) -> str:
    """Return the content-addressed key of processed bytes (their SHA-256, hex)."""
    return hashlib.sha256(data).hexdigest()


def content_hash(data: bytes) -> str:
    """Return the hash a downloaded input is known by in the reuse cache (SHA-256, hex)."""
    return hashlib.sha256(data).hexdigest()


# Why an image was finished without new work (the status shows it as ``reused``).
REUSED_NOT_MODIFIED = "not-modified"  # a conditional download answered 304
REUSED_SAME_CONTENT = "same-content"  # the same bytes were compressed before


def etag(key: str) -> str:
    """Return the ETag an image is served with (a prefix of its blob key; no quotes)."""
    return key[:32]


def fair_order(candidates: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Interleave (request id, owner) pairs so each owner takes turns, keeping each
    owner's requests in the order given (least recently served first)."""
    by_owner: dict[str, list[tuple[str, str]]] = {}
    for pair in candidates:
        by_owner.setdefault(pair[1], []).append(pair)
    queues = list(by_owner.values())
    ordered: list[tuple[str, str]] = []
    for turn in range(max((len(q) for q in queues), default=0)):
        ordered.extend(q[turn] for q in queues if turn < len(q))
    return ordered


def host_of(url: str) -> str:
    """Return the host an image URL is downloaded from (lower case, no port or user)."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


class HostShares:
    """How many images one worker holds per host, and how many it may: ``per_host``,
    halved for each recent timeout of that host (down to one), so a slow or hanging host
    occupies only its share of the download slots and healthy hosts the rest."""

    MAX_PENALTY = 3

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self.held: Counter[str] = Counter()
        self._penalty: Counter[str] = Counter()

    def cap(self, host: str) -> int:
        """Return how many images of ``host`` may be held at once now."""
        return max(1, self.per_host >> self._penalty[host])

    def full(self) -> frozenset[str]:
        """Return the hosts whose share is taken."""
        return frozenset(host for host, n in self.held.items() if n >= self.cap(host))

    def room(self) -> int:
        """Return how many images may be taken at once without any host going past its
        share (the tightest host held decides; with none held, a whole share)."""
        left = [self.cap(host) - n for host, n in self.held.items() if n < self.cap(host)]
        return max(1, min([self.per_host, *left]))

    def take(self, host: str) -> None:
        """Count one more held image of ``host``."""
        self.held[host] += 1

    def give_back(self, host: str) -> None:
        """Count one held image of ``host`` less."""
        self.held[host] -= 1
        if self.held[host] <= 0:
            del self.held[host]

    def timed_out(self, host: str) -> None:
        """A download from ``host`` timed out: halve its share (down to one slot)."""
        self._penalty[host] = min(self.MAX_PENALTY, self._penalty[host] + 1)

    def answered(self, host: str) -> None:
        """A download from ``host`` finished in time: give back half of a lost share."""
        if self._penalty[host] > 0:
            self._penalty[host] -= 1
            if not self._penalty[host]:
                del self._penalty[host]


def _check_finish(claim: Claim, target: ImageState, found: tuple[ImageState, str | None]) -> None:
    """Explain a finish that matched nothing: raise, or return for a harmless repeat."""
    state, token = found
    if token != claim.token:
        raise LeaseLost.image(claim.image_id)
    if target is ImageState.DONE and state is ImageState.DONE:
        return  # the same claim completing twice (a retry after a crash): already done
    check_transition(state, target)
    raise LeaseLost(f"image {claim.image_id} changed while it was being updated")


@dataclass(frozen=True, slots=True)
class Leasing:
    """How long leases last and how often an image may be tried."""

    lease_seconds: float = 120.0
    max_attempts: int = 3


class Workflow:
    """Every storage step of imgcompress, with its rules, over the four storage ports."""

    def __init__(
        self,
        requests: RequestStore,
        images: ImageQueue,
        deliveries: DeliveryQueue,
        blobs: BlobStore,
        cache: ReuseCache,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.requests = requests
        self.images = images
        self.deliveries = deliveries
        self.blobs = blobs
        self.cache = cache
        self._clock = clock
        self._sweep_after = ""  # where the next blob sweep resumes

    @classmethod
    def over(
        cls,
        storage: Storage,
        *,
        blobs: BlobStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Workflow:
        """Return a workflow over one store playing every role (blobs may live elsewhere)."""
        return cls(storage, storage, storage, blobs or storage, storage, clock=clock)

    # -- requests ---------------------------------------------------------------------

    async def create(self, request: NewRequest) -> str:
        """Store a request and return its id; an Idempotency-Key already used with the same
        body returns the earlier id (IdempotencyConflict with another body)."""
        holder = await self.requests.create_request(request)
        if holder is None:
            return request.request_id
        if holder.body_hash != request.body_hash:
            raise IdempotencyConflict.reused()
        return holder.request_id

    async def progress(self, request_id: str) -> Progress:
        """Count a request's images by state."""
        return progress_of(await self.requests.count_images(request_id))

    async def finalize(self, request_id: str) -> RequestRecord | None:
        """Give a request its final status once every image is final, and queue its webhook;
        return the record only to the one caller that made the change."""
        request = await self.requests.get_request(request_id)
        status: RequestStatus | None = request.status
        now = request.finished_at or self._clock()
        if request.status is RequestStatus.PENDING:
            if await self.requests.has_images_in(request_id, UNFINISHED):
                return None
            status = final_status(await self.progress(request_id))
            now = self._clock()
        if status is None:
            return None
        delivery = delivery_id(request_id, request.round) if request.webhook_url else None
        return await self.requests.finalize_request(request_id, status, now, delivery)

    async def retry_failed(self, request_id: str) -> int:
        """Queue the failed images of a final request again (never cancelled ones); the
        request is Pending until they finish and then sends a new webhook. Return how many
        were queued; RequestNotFinished while it is Pending."""
        request = await self.requests.get_request(request_id)
        if request.status is RequestStatus.PENDING:
            raise RequestNotFinished(
                f"request {request_id} is still Pending; retry its failed images once it is final"
            )
        return await self.requests.reopen_request(
            request_id, frozenset({CANCELLED.code}), self._clock()
        )

    async def list_requests(
        self, owner: str | None, before: tuple[float, str] | None, limit: int
    ) -> list[RequestRecord]:
        """Return requests newest first, older than the ``before`` cursor (only ``owner``'s
        when it is not None)."""
        return await self.requests.list_requests(owner, before, limit)

    async def unfinalized(self, limit: int) -> list[str]:
        """Return requests a lost finalize left behind."""
        return await self.requests.unfinalized_requests(limit, self._clock())

    async def cancel(self, request_id: str) -> None:
        """Fail every unfinished image as ``cancelled``, then finalize as usual."""
        await self.requests.cancel_images(request_id, CANCELLABLE, CANCELLED, self._clock())
        await self.finalize(request_id)

    async def delete(self, request_id: str) -> None:
        """Remove a request and its records; its blobs go with the next sweeps."""
        await self.requests.delete_request(request_id)

    async def expired_requests(self, retention_seconds: float, limit: int) -> list[str]:
        """Return final requests older than the retention period."""
        return await self.requests.finished_before(self._clock() - retention_seconds, limit)

    async def image(self, image_id: str) -> StoredImage:
        """Return a done image's bytes with its ETag, or raise ImageNotFound; ``image_id``
        is an output id (the stable link) or an image id."""
        output = await self.cache.get_output(image_id)
        if output is not None:
            if not await self.cache.output_in_use(image_id):  # its requests were deleted
                raise ImageNotFound(image_id)
            key, content_type = output.blob_key, output.content_type
        else:
            record = await self.requests.get_image(image_id)
            if record.state is not ImageState.DONE or record.blob_key is None:
                raise ImageNotFound(image_id)
            key, content_type = record.blob_key, record.content_type or ""
        try:
            blob = await self.blobs.get_blob(key)
        except BlobNotFound:
            raise ImageNotFound(image_id) from None
        return StoredImage(image_id, blob.data, content_type or blob.content_type, etag(key))

    # -- images -----------------------------------------------------------------------

    async def claim(
        self, worker: str, limit: int, leasing: Leasing, shares: HostShares | None = None
    ) -> list[Claim]:
        """Lease up to ``limit`` images, taking turns across owners and requests so every
        active request makes progress, and (with ``shares``) never more of one host's
        images than its share; expired leases past ``max_attempts`` fail first."""
        now = self._clock()
        await self.images.expire_leases(now, leasing.max_attempts, WORKER_LOST)
        skip = shares.full() if shares else frozenset()
        found = await self.images.claimable_requests(now, limit, skip)
        candidates = fair_order(found)[:limit]
        claims: list[Claim] = []
        while candidates and len(claims) < limit:
            share = max(1, (limit - len(claims)) // len(candidates))
            still_full: list[tuple[str, str]] = []
            for request_id, owner in candidates:
                # With shares, never more at once than the tightest host has room for: the
                # hosts of the images claimed are known only once they are claimed.
                want = min(share, limit - len(claims), shares.room() if shares else limit)
                if want <= 0:
                    break
                got = await self.images.claim_images(
                    request_id,
                    worker,
                    want,
                    now=now,
                    lease_seconds=leasing.lease_seconds,
                    max_attempts=leasing.max_attempts,
                    skip_hosts=shares.full() if shares else frozenset(),
                )
                if shares:
                    for claim in got:
                        shares.take(host_of(claim.url))
                claims.extend(got)
                if len(got) == want:
                    still_full.append((request_id, owner))
            candidates = still_full
        return claims

    async def renew(self, claims: Sequence[Claim], lease_seconds: float) -> list[Claim]:
        """Extend the leases these claims still hold; return those."""
        return await self.images.renew_claims(claims, self._clock() + lease_seconds)

    async def _finish(self, claim: Claim, target: ImageState, change: ImageChange) -> None:
        found = await self.images.finish_image(
            claim, target, sources(target), change, self._clock()
        )
        if found is not None:
            _check_finish(claim, target, found)

    async def complete(
        self,
        claim: Claim,
        result: ImageResult,
        *,
        owner: str = "",
        policy: str = "",
        input_hash: str | None = None,
    ) -> Output:
        """Write the processed bytes, keep them as the output of this input (its bytes'
        hash) under this policy for this owner, then mark the image done referencing
        them; return the output (an earlier twin's, if another worker won the race)."""
        now = self._clock()
        key = blob_key(result.data)
        await self.blobs.put_blob(key, result.data, result.content_type, now)
        output = await self.cache.add_output(
            Output(
                output_id=new_id(),
                owner=owner,
                policy=policy,
                input_hash=input_hash or f"output:{key}",
                blob_key=key,
                content_type=result.content_type,
                width=result.width,
                height=result.height,
                input_bytes=result.input_bytes,
                output_bytes=len(result.data),
                note=result.note,
                quality=result.quality,
                score=result.score,
                warnings=result.warnings,
                last_used_at=now,
            )
        )
        await self._finish(claim, ImageState.DONE, ImageChange(output=output))
        return output

    async def reusable(self, owner: str, policy: str, input_hash: str) -> Output | None:
        """Return what this input already became under this policy for this owner."""
        return await self.cache.find_output(owner, policy, input_hash, self._clock())

    async def reuse(self, claim: Claim, output: Output, why: str) -> None:
        """Mark a claimed image done with an earlier output (``why``: ``not-modified`` or
        ``same-content``), with no download or compression."""
        await self._finish(claim, ImageState.DONE, ImageChange(output=output, reused=why))

    async def source(self, owner: str, url: str) -> Source | None:
        """Return what the last download of ``url`` for ``owner`` answered."""
        return await self.cache.get_source(owner, url)

    async def downloaded(
        self,
        owner: str,
        url: str,
        request_id: str,
        input_hash: str,
        etag: str | None,
        last_modified: str | None,
    ) -> None:
        """Remember a download's validators and content hash for the next time."""
        source = Source(owner, url, input_hash, etag, last_modified, self._clock(), request_id)
        await self.cache.put_source(source)

    async def fail(self, claim: Claim, failure: Failure) -> None:
        """Mark a claimed image failed for good."""
        await self._finish(claim, ImageState.FAILED, ImageChange(failure=failure))

    async def retry(self, claim: Claim, failure: Failure, delay: float) -> None:
        """Queue a claimed image again, not to be claimed for ``delay`` seconds."""
        change = ImageChange(failure=failure, not_before=self._clock() + delay)
        await self._finish(claim, ImageState.QUEUED, change)

    async def queue_depth(self) -> int:
        """Count images waiting to be claimed."""
        return await self.images.queue_depth()

    # -- webhook deliveries -----------------------------------------------------------

    async def claim_deliveries(
        self, worker: str, limit: int, lease_seconds: float
    ) -> list[DeliveryClaim]:
        """Lease up to ``limit`` due webhook deliveries."""
        return await self.deliveries.claim_deliveries(
            worker, limit, now=self._clock(), lease_seconds=lease_seconds
        )

    async def record_delivery(
        self, claim: DeliveryClaim, *, error: str | None = None, retry_in: float | None = None
    ) -> None:
        """Record an attempt: delivered when there is no ``error``; else retried in
        ``retry_in`` seconds, or given up when that is None."""
        now = self._clock()
        retry_at = None if retry_in is None else now + retry_in
        outcome = delivery_outcome(error is None, error, retry_at, now)
        await self.deliveries.record_delivery(claim, outcome)

    # -- blobs ------------------------------------------------------------------------

    async def sweep_blobs(self, grace_seconds: float, batch: int = 500) -> int:
        """Delete one batch of blobs nothing references that were written more than
        ``grace_seconds`` ago (a crash between writing and marking done, a deleted or
        expired request); return how many. Successive calls walk every blob."""
        cutoff = self._clock() - grace_seconds
        keys = await self.blobs.blobs_written_before(cutoff, self._sweep_after, batch)
        self._sweep_after = keys[-1] if len(keys) == batch else ""
        if not keys:
            return 0
        used = await self.requests.referenced_blobs(keys)
        unused = [key for key in keys if key not in used]
        if unused:
            await self.blobs.delete_blobs(unused, cutoff)
        return len(unused)

    async def sweep_outputs(self, grace_seconds: float, limit: int = 500) -> int:
        """Delete cached outputs no image references that were not used for
        ``grace_seconds`` (after a DELETE or retention), so their blobs go next."""
        return await self.cache.delete_unreferenced_outputs(self._clock() - grace_seconds, limit)
