"""Workflow: every storage step of imgcompress, applying the rules over the storage ports."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ..errors import BlobNotFound, IdempotencyConflict, ImageNotFound, RequestNotFinished
from ..model import (
    Claim,
    DeliveryClaim,
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
from ..ports import BlobStore, DeliveryQueue, ImageQueue, RequestStore, ReuseCache, Storage
from .rules import (
    CANCELLABLE,
    CANCELLED,
    UNFINISHED,
    WORKER_LOST,
    Leasing,
    _check_finish,
    blob_key,
    delivery_id,
    delivery_outcome,
    etag,
    final_status,
    progress_of,
    sources,
)
from .scheduling import HostShares, Turns, host_of

__all__ = ["Workflow"]

# How many of an owner's requests with work the claim list holds at most.
TURNS_PER_OWNER = 16


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
        self._expired_at = -1.0  # when expired leases were last looked for
        self._turns = Turns()  # the requests with images to claim, next turn first

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
            self._turns.forget()
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
        queued = await self.requests.reopen_request(
            request_id, frozenset({CANCELLED.code}), self._clock()
        )
        self._turns.forget()
        return queued

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

    async def locate(self, image_id: str) -> tuple[str, str]:
        """Return the blob key and content type of a done image, or raise ImageNotFound;
        ``image_id`` is an output id (the stable link) or an image id."""
        output = await self.cache.get_output(image_id)
        if output is not None:
            if not await self.cache.output_in_use(image_id):  # its requests were deleted
                raise ImageNotFound(image_id)
            return output.blob_key, output.content_type
        record = await self.requests.get_image(image_id)
        if record.state is not ImageState.DONE or record.blob_key is None:
            raise ImageNotFound(image_id)
        return record.blob_key, record.content_type or ""

    async def image(self, image_id: str) -> StoredImage:
        """Return a done image's bytes with its ETag, or raise ImageNotFound (see
        :meth:`locate`)."""
        key, content_type = await self.locate(image_id)
        try:
            blob = await self.blobs.get_blob(key)
        except BlobNotFound:
            raise ImageNotFound(image_id) from None
        return StoredImage(image_id, blob.data, content_type or blob.content_type, etag(key))

    # -- images -----------------------------------------------------------------------

    async def claim(
        self,
        worker: str,
        limit: int,
        leasing: Leasing,
        shares: HostShares | None = None,
        *,
        look_again: bool = False,
    ) -> list[Claim]:
        """Lease up to ``limit`` images, taking turns across owners and requests so every
        active request makes progress, and (with ``shares``) never more of one host's
        images than its share; expired leases past ``max_attempts`` fail first.

        Which requests have work is remembered for a second (:class:`Turns`);
        ``look_again`` asks the store now (new work was submitted)."""
        now = self._clock()
        # Leases last minutes: looking for expired ones once a second is soon enough, and
        # spares a write on every claim of a busy worker.
        if not 0 <= now - self._expired_at < 1.0:
            await self.images.expire_leases(now, leasing.max_attempts, WORKER_LOST)
            self._expired_at = now
        skip = shares.full() if shares else frozenset()
        fresh = look_again or self._turns.stale(now, skip)
        if fresh:
            await self._find_turns(now, limit, skip)
        claims, waiting = await self._claim_in_turn(worker, limit, leasing, shares, now)
        if not claims and not waiting and not fresh:  # the requests remembered ran dry
            await self._find_turns(now, limit, skip)
            claims, _ = await self._claim_in_turn(worker, limit, leasing, shares, now)
        return claims

    async def _find_turns(self, now: float, limit: int, skip: frozenset[str]) -> None:
        """Ask the store which requests have images to claim (enough of them per owner
        for a whole worker's slots, so the list serves the next claims too)."""
        found = await self.images.claimable_requests(now, max(limit, TURNS_PER_OWNER), skip)
        self._turns.found(found, now, skip)

    async def _claim_in_turn(
        self, worker: str, limit: int, leasing: Leasing, shares: HostShares | None, now: float
    ) -> tuple[list[Claim], bool]:
        """Claim from the requests whose turn it is, an even share from each; also say
        whether some were passed over because their hosts are full."""
        candidates = self._turns.pairs[:limit]
        claims: list[Claim] = []
        claimed: dict[tuple[str, str], None] = {}  # requests claimed from, in order
        dry: list[tuple[str, str]] = []  # requests that may have no images left
        waiting = False
        while candidates and len(claims) < limit:
            share = max(1, (limit - len(claims)) // len(candidates))
            still_full: list[tuple[str, str]] = []
            for pair in candidates:
                # With shares, never more at once than the tightest host has room for: the
                # hosts of the images claimed are known only once they are claimed.
                want = min(share, limit - len(claims), shares.room() if shares else limit)
                if want <= 0:
                    break
                full = shares.full() if shares else frozenset()
                if self._turns.waiting(pair, full):
                    waiting = True
                    continue
                got = await self.images.claim_images(
                    pair[0],
                    worker,
                    want,
                    now=now,
                    lease_seconds=leasing.lease_seconds,
                    max_attempts=leasing.max_attempts,
                    skip_hosts=full,
                )
                if shares:
                    for claim in got:
                        shares.take(host_of(claim.url))
                if got:
                    claimed[pair] = None
                claims.extend(got)
                if len(got) == want:
                    still_full.append(pair)
                elif self._turns.gave_less(pair, full):
                    waiting = True  # its other images are of full hosts
                else:
                    dry.append(pair)
            candidates = still_full
        self._turns.played(list(claimed), dry)
        return claims, waiting

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

    async def recall(
        self, owner: str, url: str, policy: str
    ) -> tuple[Source | None, Output | None]:
        """Return what the last download of ``url`` answered and what its bytes became
        under ``policy`` (one store call before each download)."""
        return await self.cache.recall(owner, url, policy, self._clock())

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
