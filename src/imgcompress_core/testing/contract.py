"""The storage contract suite: what every Storage must do, as pytest tests.

Use it from your own test module::

    import pytest
    from imgcompress_core.testing import StorageContract

    class TestMyStorage(StorageContract):
        @pytest.fixture
        async def storage(self):
            store = MyStorage(...)
            await store.open()
            yield store
            await store.close()

The tests drive the store through :class:`~imgcompress_core.workflow.Workflow` on a
:class:`FakeClock` (the ``clock`` fixture), which hands the store the time with each
call. The tests run under anyio's pytest plugin (installed with anyio).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import anyio
import pytest

from ..errors import (
    IdempotencyConflict,
    IllegalTransition,
    ImageNotFound,
    LeaseLost,
    RequestNotFound,
)
from ..model import (
    Failure,
    ImageResult,
    ImageState,
    NewImage,
    RequestStatus,
    new_id,
)
from ..ports import BlobStore, Storage
from ..workflow import HostShares, Workflow
from ._contract_kit import LEASE, LEASING, MAX_ATTEMPTS, claim_all, make_request, result
from ._contract_later import AfterClaimsContract
from .blob_contract import BlobContract
from .fakes import FakeClock

__all__ = ["StorageContract", "make_request"]


@pytest.mark.anyio
class StorageContract(AfterClaimsContract, BlobContract):
    """Every Storage must pass these tests; subclass and provide a ``storage`` fixture."""

    @pytest.fixture
    def blobs(self, storage: Storage) -> BlobStore:
        """The store under test plays the blob role too."""
        return storage

    @pytest.fixture
    def clock(self) -> FakeClock:
        """Return the clock the store under test must use."""
        return FakeClock()

    @pytest.fixture
    def storage(self) -> AsyncIterator[Storage]:
        """Provide an opened, empty store (override this)."""
        raise NotImplementedError("subclasses provide the storage fixture")

    @pytest.fixture
    def flow(self, storage: Storage, clock: FakeClock) -> Workflow:
        """Return the workflow over the store under test, on the test's clock."""
        return Workflow.over(storage, clock=clock)

    # -- requests ---------------------------------------------------------------------

    async def test_create_and_read_back(self, storage: Storage, flow: Workflow) -> None:
        """A stored request reads back with its products, images and progress."""
        request = make_request((2, 1), webhook_url="https://hooks.example/x")
        await flow.create(request)
        record = await storage.get_request(request.request_id)
        assert record.status is RequestStatus.PENDING
        assert record.columns == request.columns
        assert record.webhook_url == "https://hooks.example/x"
        assert record.total_images == 3
        assert record.finished_at is None
        products = await storage.list_products(request.request_id)
        assert [(p.row, p.serial, p.name, p.cells) for p in products] == [
            (p.row, p.serial, p.name, p.cells) for p in request.products
        ]
        images = await storage.list_images(request.request_id)
        assert [(i.image_id, i.row, i.position, i.url) for i in images] == [
            (i.image_id, i.row, i.position, i.url) for i in request.images
        ]
        assert all(i.state is ImageState.QUEUED and i.attempts == 0 for i in images)
        progress = await flow.progress(request.request_id)
        assert (progress.total, progress.queued, progress.finished) == (3, 3, 0)

    async def test_idempotency_key_returns_the_first_request(
        self, storage: Storage, flow: Workflow
    ) -> None:
        """The same key and body give back the first id and store nothing; another body
        is a conflict; deleting the request frees the key."""
        first = dataclasses.replace(make_request((2,)), idempotency_key="k1", body_hash="h1")
        assert await flow.create(first) == first.request_id
        again = dataclasses.replace(make_request((2,)), idempotency_key="k1", body_hash="h1")
        assert await flow.create(again) == first.request_id
        with pytest.raises(RequestNotFound):
            await storage.get_request(again.request_id)
        assert await storage.queue_depth() == 2
        other = dataclasses.replace(make_request((1,)), idempotency_key="k1", body_hash="h2")
        with pytest.raises(IdempotencyConflict):
            await flow.create(other)
        for claim in await claim_all(flow):
            await flow.fail(claim, Failure("x", "y"))
        await flow.finalize(first.request_id)
        await flow.delete(first.request_id)
        assert await flow.create(other) == other.request_id

    async def test_unknown_ids_raise_not_found(self, storage: Storage, flow: Workflow) -> None:
        """Unknown request and image ids raise the core's NotFound errors."""
        with pytest.raises(RequestNotFound):
            await storage.get_request("missing")
        with pytest.raises(RequestNotFound):
            await storage.list_images("missing")
        with pytest.raises(RequestNotFound):
            await flow.progress("missing")
        with pytest.raises(ImageNotFound):
            await flow.image("missing")

    async def test_requests_are_isolated(self, storage: Storage, flow: Workflow) -> None:
        """One request's images never show up in another's."""
        first, second = make_request((1,)), make_request((2,))
        await flow.create(first)
        await flow.create(second)
        assert len(await storage.list_images(first.request_id)) == 1
        assert (await flow.progress(second.request_id)).total == 2

    # -- claims -----------------------------------------------------------------------

    async def test_claims_lease_each_image_once(self, storage: Storage, flow: Workflow) -> None:
        """Claims respect the limit, count attempts, and never hand out an image twice."""
        request = make_request((3, 2))
        await flow.create(request)
        first = await flow.claim("w1", 2, LEASING)
        second = await flow.claim("w2", 10, LEASING)
        assert len(first) == 2
        assert len(second) == 3
        ids = [c.image_id for c in first + second]
        assert sorted(ids) == sorted(i.image_id for i in request.images)
        assert all(c.attempt == 1 and c.request_id == request.request_id for c in first + second)
        assert await flow.claim("w3", 10, LEASING) == []
        progress = await flow.progress(request.request_id)
        assert (progress.queued, progress.working) == (0, 5)

    async def test_queue_depth_counts_waiting_images(
        self, storage: Storage, flow: Workflow
    ) -> None:
        """Queued images across requests are counted; claimed ones are not."""
        assert await storage.queue_depth() == 0
        await flow.create(make_request((2, 1)))
        await flow.create(make_request((2,)))
        assert await storage.queue_depth() == 5
        await flow.claim("w", 2, LEASING)
        assert await storage.queue_depth() == 3

    async def test_concurrent_claims_never_overlap(self, storage: Storage, flow: Workflow) -> None:
        """Many claimers at once get disjoint sets of images."""
        request = make_request((10, 10, 10))
        await flow.create(request)
        got: list[str] = []

        async def claimer(name: str) -> None:
            for _ in range(5):
                got.extend(c.image_id for c in await flow.claim(name, 3, LEASING))

        async with anyio.create_task_group() as tasks:
            for n in range(6):
                tasks.start_soon(claimer, f"w{n}")
        assert len(got) == len(set(got)) == 30

    async def test_expired_lease_is_taken_over_and_fences_the_old_owner(
        self, storage: Storage, flow: Workflow, clock: FakeClock
    ) -> None:
        """After the lease expires another worker claims the image; the old claim is dead."""
        request = make_request((1,))
        await flow.create(request)
        [old] = await claim_all(flow, "w1")
        clock.advance(LEASE / 2)
        assert await claim_all(flow, "w2") == []
        clock.advance(LEASE)
        [new] = await claim_all(flow, "w2")
        assert new.image_id == old.image_id
        assert new.attempt == 2
        assert new.token != old.token
        with pytest.raises(LeaseLost):
            await flow.complete(old, result())
        with pytest.raises(LeaseLost):
            await flow.fail(old, Failure("x", "y"))
        await flow.complete(new, result())
        [image] = await storage.list_images(request.request_id)
        assert image.state is ImageState.DONE

    async def test_expired_leases_come_before_the_queue(
        self, storage: Storage, flow: Workflow, clock: FakeClock
    ) -> None:
        """A dead worker's image is taken over before the request's queued images."""
        request = make_request((4,))
        await flow.create(request)
        [dead] = await flow.claim("w1", 1, LEASING)
        clock.advance(LEASE + 1)
        claims = await flow.claim("w2", 2, LEASING)
        assert [c.image_id for c in claims] == [dead.image_id, request.images[1].image_id]

    async def test_a_request_is_claimed_in_row_and_position_order(
        self, storage: Storage, flow: Workflow
    ) -> None:
        """Within one request, images are claimed in the order of the CSV."""
        request = make_request((2, 3))
        await flow.create(request)
        claimed = []
        for _ in range(5):
            claimed += [c.image_id for c in await flow.claim("w", 1, LEASING)]
        assert claimed == [i.image_id for i in request.images]

    async def test_claims_take_turns_across_requests(
        self, storage: Storage, flow: Workflow
    ) -> None:
        """A big request uploaded first does not hold every free slot: each active request
        gets its share, and the least recently served goes first."""
        big, small = make_request((20,)), make_request((1,))
        await flow.create(big)
        await flow.create(small)
        first = await flow.claim("w", 4, LEASING)
        assert small.images[0].image_id in {c.image_id for c in first}
        assert len(first) == 4
        third = make_request((2,))
        await flow.create(third)
        [turn] = await flow.claim("w", 1, LEASING)
        assert turn.request_id == third.request_id  # never served yet: its turn

    async def test_claims_take_turns_across_owners(self, storage: Storage, flow: Workflow) -> None:
        """With API keys on, an owner with many requests gets no more turns than one with
        a single request."""
        many = [dataclasses.replace(make_request((5,)), owner="a") for _ in range(3)]
        lone = dataclasses.replace(make_request((5,)), owner="b")
        for request in [*many, lone]:
            await flow.create(request)
        claims = await flow.claim("w", 2, LEASING)
        owners = {(await storage.get_request(c.request_id)).owner for c in claims}
        assert owners == {"a", "b"}

    async def test_claims_keep_to_each_hosts_share(self, storage: Storage, flow: Workflow) -> None:
        """With host shares, a worker never holds more of one host's images than its
        share, so the images of other hosts get the free slots."""
        slow = [
            NewImage(new_id(), 2, n, f"https://slow.example/{n}.jpg", "slow.example")
            for n in range(6)
        ]
        fast = [NewImage(new_id(), 3, 0, "https://fast.example/0.jpg", "fast.example")]
        request = dataclasses.replace(make_request((1, 1)), images=(*slow, *fast))
        await flow.create(request)
        shares = HostShares(per_host=2)
        claims = await flow.claim("w", 5, LEASING, shares)
        hosts = sorted(c.url.split("/")[2] for c in claims)
        assert hosts == ["fast.example", "slow.example", "slow.example"]
        assert await flow.claim("w", 5, LEASING, shares) == []  # slow.example's share is full
        shares.give_back("slow.example")
        [more] = await flow.claim("w", 5, LEASING, shares)
        assert more.url.startswith("https://slow.example/")

    async def test_image_that_keeps_killing_workers_fails(
        self, storage: Storage, flow: Workflow, clock: FakeClock
    ) -> None:
        """After max_attempts expired leases the image fails with worker_lost, not again."""
        request = make_request((1,))
        await flow.create(request)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            [claim] = await claim_all(flow)
            assert claim.attempt == attempt
            clock.advance(LEASE + 1)
        assert await claim_all(flow) == []
        [image] = await storage.list_images(request.request_id)
        assert image.state is ImageState.FAILED
        assert image.failure is not None and image.failure.code == "worker_lost"
        assert await flow.unfinalized(10) == [request.request_id]
        final = await flow.finalize(request.request_id)
        assert final is not None and final.status is RequestStatus.FAILED

    async def test_renewed_lease_is_not_taken_over(
        self, storage: Storage, flow: Workflow, clock: FakeClock
    ) -> None:
        """Renewing keeps the image; a claim that lost its image is not renewed."""
        request = make_request((2,))
        await flow.create(request)
        kept, lost = await claim_all(flow)
        clock.advance(LEASE - 1)
        assert await flow.renew([kept], LEASE) == [kept]
        clock.advance(2)
        [taken] = await claim_all(flow, "w2")
        assert taken.image_id == lost.image_id
        assert await flow.renew([kept, lost], LEASE) == [kept]
        await flow.complete(kept, result())

    # -- finishing images -------------------------------------------------------------

    async def test_complete_stores_the_image(self, storage: Storage, flow: Workflow) -> None:
        """A completed image is done, with its sizes, and its bytes are served back."""
        request = make_request((1,))
        await flow.create(request)
        [claim] = await claim_all(flow)
        data = b"\xff\xd8some jpeg bytes"
        await flow.complete(
            claim,
            ImageResult(data, "image/jpeg", width=640, height=480, input_bytes=5000, note="n"),
        )
        [image] = await storage.list_images(request.request_id)
        assert image.state is ImageState.DONE
        assert (image.input_bytes, image.output_bytes) == (5000, len(data))
        assert (image.width, image.height, image.content_type) == (640, 480, "image/jpeg")
        assert image.note == "n"
        assert image.failure is None
        stored = await flow.image(claim.image_id)
        assert (stored.data, stored.content_type) == (data, "image/jpeg")
        assert stored.etag
        assert (await flow.image(claim.image_id)).etag == stored.etag

    async def test_complete_is_idempotent_for_the_same_claim(
        self, storage: Storage, flow: Workflow
    ) -> None:
        """Completing twice with the same claim (a retry after a crash) changes nothing."""
        request = make_request((1,))
        await flow.create(request)
        [claim] = await claim_all(flow)
        await flow.complete(claim, result())
        await flow.complete(claim, result())
        progress = await flow.progress(request.request_id)
        assert (progress.done, progress.total) == (1, 1)

    async def test_final_images_cannot_change(self, storage: Storage, flow: Workflow) -> None:
        """A done or failed image rejects every further change, even from its own claim."""
        request = make_request((2,))
        await flow.create(request)
        done, failed = await claim_all(flow)
        await flow.complete(done, result())
        await flow.fail(failed, Failure("not_an_image", "not an image"))
        with pytest.raises(IllegalTransition):
            await flow.fail(done, Failure("x", "y"))
        with pytest.raises(IllegalTransition):
            await flow.retry(failed, Failure("x", "y"), 0)
        with pytest.raises(IllegalTransition):
            await flow.complete(failed, result())
        images = {i.image_id: i for i in await storage.list_images(request.request_id)}
        assert images[done.image_id].state is ImageState.DONE
        assert images[failed.image_id].state is ImageState.FAILED
        assert images[failed.image_id].failure == Failure("not_an_image", "not an image")
        with pytest.raises(ImageNotFound):
            await flow.image(failed.image_id)

    async def test_retry_waits_until_not_before(
        self, storage: Storage, flow: Workflow, clock: FakeClock
    ) -> None:
        """A retried image is queued again but not claimable before its time."""
        request = make_request((1,))
        await flow.create(request)
        [claim] = await claim_all(flow)
        await flow.retry(claim, Failure("download_timeout", "slow"), 10)
        [image] = await storage.list_images(request.request_id)
        assert image.state is ImageState.QUEUED
        assert image.failure == Failure("download_timeout", "slow")
        assert await claim_all(flow) == []
        clock.advance(11)
        [again] = await claim_all(flow)
        assert again.attempt == 2
        with pytest.raises(LeaseLost):
            await flow.complete(claim, result())
