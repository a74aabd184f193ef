"""The storage contract suite: what every Storage must do, as pytest tests.

Use it from your own test module::

    import pytest
    from imgcompress_core.testing import StorageContract

    class TestMyStorage(StorageContract):
        @pytest.fixture
        async def storage(self, clock):
            store = MyStorage(..., clock=clock)
            await store.open()
            yield store
            await store.close()

The ``clock`` fixture is a :class:`FakeClock` the tests move to expire leases and reach
retry times; your store must read the time from the clock it is given. The tests run
under anyio's pytest plugin (installed with anyio).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import anyio
import pytest

from ..errors import (
    BlobNotFound,
    IdempotencyConflict,
    IllegalTransition,
    ImageNotFound,
    LeaseLost,
    RequestNotFound,
)
from ..model import (
    Claim,
    DeliveryState,
    Failure,
    ImageResult,
    ImageState,
    NewImage,
    NewProduct,
    NewRequest,
    RequestStatus,
    new_id,
)
from ..ports import BlobStore, Storage
from ..workflow import HostShares, Leasing, Workflow, blob_key
from .blob_contract import BlobContract
from .fakes import FakeClock

__all__ = ["StorageContract", "make_request"]

LEASE = 60.0
MAX_ATTEMPTS = 3
LEASING = Leasing(LEASE, MAX_ATTEMPTS)


def make_request(
    images_per_row: tuple[int, ...] = (2, 1), *, webhook_url: str | None = None
) -> NewRequest:
    """Build a request with one product per entry and that many images in each."""
    products: list[NewProduct] = []
    images: list[NewImage] = []
    for index, count in enumerate(images_per_row):
        row = index + 2
        products.append(NewProduct(row, str(index + 1), f"SKU{index + 1}", (str(index + 1), "x")))
        images.extend(
            NewImage(
                new_id(), row, position, f"https://img.example/{row}/{position}.jpg", "img.example"
            )
            for position in range(count)
        )
    return NewRequest(
        request_id=new_id(),
        columns=("S. No.", "Product Name"),
        webhook_url=webhook_url,
        created_at=1_700_000_000.0,
        products=tuple(products),
        images=tuple(images),
    )


def result(data: bytes = b"\xff\xd8processed") -> ImageResult:
    """Build a processed-image result."""
    return ImageResult(data=data, content_type="image/jpeg", width=4, height=3, input_bytes=99)


async def claim_all(flow: Workflow, owner: str = "w1", limit: int = 100) -> list[Claim]:
    """Claim every claimable image."""
    return await flow.claim(owner, limit, LEASING)


@pytest.mark.anyio
class StorageContract(BlobContract):
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

    # -- finalizing -------------------------------------------------------------------

    async def test_finalize_waits_for_every_image(self, storage: Storage, flow: Workflow) -> None:
        """A request is final only when every image is, and becomes Completed exactly once."""
        request = make_request((2,), webhook_url="https://hooks.example/done")
        await flow.create(request)
        first, second = await claim_all(flow)
        await flow.complete(first, result())
        assert await flow.finalize(request.request_id) is None
        await flow.fail(second, Failure("upstream_http_404", "gone"))
        final = await flow.finalize(request.request_id)
        assert final is not None
        assert final.status is RequestStatus.COMPLETED
        assert final.finished_at is not None
        assert await flow.finalize(request.request_id) is None
        assert (await storage.get_request(request.request_id)).status is RequestStatus.COMPLETED
        [delivery] = await storage.list_deliveries(request.request_id)
        assert delivery.state is DeliveryState.PENDING
        assert delivery.url == "https://hooks.example/done"

    async def test_request_with_no_success_fails(self, storage: Storage, flow: Workflow) -> None:
        """When every image failed the request ends Failed; no webhook means no delivery."""
        request = make_request((1,))
        await flow.create(request)
        [claim] = await claim_all(flow)
        await flow.fail(claim, Failure("not_an_image", "nope"))
        final = await flow.finalize(request.request_id)
        assert final is not None
        assert final.status is RequestStatus.FAILED
        assert await storage.list_deliveries(request.request_id) == []

    async def test_lost_finalize_is_found_again(self, storage: Storage, flow: Workflow) -> None:
        """A request whose images all finished but was never finalized shows up for a sweep."""
        request, other = make_request((2,)), make_request((1,))
        await flow.create(request)
        await flow.create(other)
        claims = await claim_all(flow)
        for claim in claims:
            if claim.request_id == request.request_id:
                await flow.complete(claim, result())
        assert await flow.unfinalized(10) == [request.request_id]
        assert await flow.finalize(request.request_id) is not None
        assert await flow.unfinalized(10) == []

    async def test_cancel_fails_unfinished_images_and_fences_their_workers(
        self, storage: Storage, flow: Workflow
    ) -> None:
        """Cancelling keeps done images, fails the rest as cancelled, and kills live claims."""
        request = make_request((3,), webhook_url="https://hooks.example/c")
        await flow.create(request)
        done, working = await flow.claim("w", 2, LEASING)
        await flow.complete(done, result())
        await flow.cancel(request.request_id)
        images = {i.image_id: i for i in await storage.list_images(request.request_id)}
        assert images[done.image_id].state is ImageState.DONE
        others = [i for i in images.values() if i.image_id != done.image_id]
        assert {i.state for i in others} == {ImageState.FAILED}
        assert {i.failure.code for i in others if i.failure} == {"cancelled"}
        with pytest.raises(LeaseLost):
            await flow.complete(working, result())
        assert await claim_all(flow) == []
        assert (await storage.get_request(request.request_id)).status is RequestStatus.COMPLETED
        assert len(await storage.list_deliveries(request.request_id)) == 1
        assert (await flow.image(done.image_id)).data == result().data

    async def test_delete_removes_everything(
        self, storage: Storage, flow: Workflow, clock: FakeClock
    ) -> None:
        """A deleted request, its images, bytes and deliveries are gone; others stay."""
        request, other = make_request((1,), webhook_url="https://h.example/d"), make_request((1,))
        await flow.create(request)
        await flow.create(other)
        for claim in await claim_all(flow):
            await flow.complete(claim, result())
        await flow.finalize(request.request_id)
        await flow.finalize(other.request_id)
        clock.advance(100)
        assert set(await storage.finished_before(clock.now, 10)) == {
            request.request_id,
            other.request_id,
        }
        assert await storage.finished_before(clock.now - 200, 10) == []
        await flow.delete(request.request_id)
        with pytest.raises(RequestNotFound):
            await storage.get_request(request.request_id)
        with pytest.raises(ImageNotFound):
            await flow.image(request.images[0].image_id)
        assert await flow.claim_deliveries("w", 10, LEASE) == []  # its webhook went too
        assert await storage.finished_before(clock.now, 10) == [other.request_id]
        assert (await storage.get_request(other.request_id)).status is RequestStatus.COMPLETED
        with pytest.raises(RequestNotFound):
            await flow.delete(request.request_id)

    async def test_base_url_and_owner_are_kept(self, storage: Storage, flow: Workflow) -> None:
        """The public base URL and the owner given at upload read back with the request."""
        request = dataclasses.replace(
            make_request((1,)), base_url="https://img.example", owner="key-fingerprint"
        )
        await flow.create(request)
        record = await storage.get_request(request.request_id)
        assert record.base_url == "https://img.example"
        assert record.owner == "key-fingerprint"

    async def test_concurrent_finalize_has_one_winner(
        self, storage: Storage, flow: Workflow
    ) -> None:
        """Many workers finalizing the same request at once: exactly one succeeds."""
        request = make_request((3,), webhook_url="https://hooks.example/x")
        await flow.create(request)
        for claim in await claim_all(flow):
            await flow.complete(claim, result())
        winners = []

        async def finalize() -> None:
            if await flow.finalize(request.request_id) is not None:
                winners.append(1)

        async with anyio.create_task_group() as tasks:
            for _ in range(8):
                tasks.start_soon(finalize)
        assert len(winners) == 1
        assert len(await storage.list_deliveries(request.request_id)) == 1

    # -- webhook deliveries -----------------------------------------------------------

    async def _finished_with_webhook(self, flow: Workflow) -> str:
        request = make_request((1,), webhook_url="https://hooks.example/y")
        await flow.create(request)
        [claim] = await claim_all(flow)
        await flow.complete(claim, result())
        assert await flow.finalize(request.request_id) is not None
        return request.request_id

    async def test_delivery_retry_then_success(
        self, storage: Storage, flow: Workflow, clock: FakeClock
    ) -> None:
        """A failed delivery comes back when due; a delivered one never does."""
        request_id = await self._finished_with_webhook(flow)
        [claim] = await flow.claim_deliveries("w1", 10, LEASE)
        assert (claim.request_id, claim.url, claim.attempt) == (
            request_id,
            "https://hooks.example/y",
            1,
        )
        assert await flow.claim_deliveries("w2", 10, LEASE) == []
        await flow.record_delivery(claim, error="HTTP 500", retry_in=30)
        [pending] = await storage.list_deliveries(request_id)
        assert (pending.state, pending.attempts, pending.last_error) == (
            DeliveryState.PENDING,
            1,
            "HTTP 500",
        )
        assert await flow.claim_deliveries("w1", 10, LEASE) == []
        clock.advance(31)
        [again] = await flow.claim_deliveries("w1", 10, LEASE)
        assert again.attempt == 2
        with pytest.raises(LeaseLost):
            await flow.record_delivery(claim)
        await flow.record_delivery(again)
        [delivered] = await storage.list_deliveries(request_id)
        assert delivered.state is DeliveryState.DELIVERED
        assert delivered.delivered_at is not None
        clock.advance(1000)
        assert await flow.claim_deliveries("w1", 10, LEASE) == []

    async def test_delivery_given_up(self, storage: Storage, flow: Workflow) -> None:
        """A delivery recorded with no next attempt is failed for good."""
        request_id = await self._finished_with_webhook(flow)
        [claim] = await flow.claim_deliveries("w1", 10, LEASE)
        await flow.record_delivery(claim, error="410")
        [delivery] = await storage.list_deliveries(request_id)
        assert delivery.state is DeliveryState.FAILED
        assert await flow.claim_deliveries("w1", 10, LEASE) == []

    async def test_expired_delivery_lease_is_taken_over(
        self, storage: Storage, flow: Workflow, clock: FakeClock
    ) -> None:
        """A delivery whose sender died is claimed again after its lease."""
        await self._finished_with_webhook(flow)
        [first] = await flow.claim_deliveries("w1", 10, LEASE)
        clock.advance(LEASE + 1)
        [second] = await flow.claim_deliveries("w2", 10, LEASE)
        assert second.delivery_id == first.delivery_id
        assert second.attempt == 2

    # -- blobs and the sweep ----------------------------------------------------------

    async def test_images_with_the_same_bytes_share_one_blob(
        self, storage: Storage, flow: Workflow
    ) -> None:
        """Two images that compress to the same bytes reference one blob, same ETag."""
        request = make_request((2,))
        await flow.create(request)
        first, second = await claim_all(flow)
        await flow.complete(first, result(b"identical"))
        await flow.complete(second, result(b"identical"))
        one, two = await flow.image(first.image_id), await flow.image(second.image_id)
        assert one.data == two.data == b"identical"
        assert one.etag == two.etag
        key = blob_key(b"identical")
        assert await storage.referenced_blobs([key, blob_key(b"other")]) == {key}

    async def test_sweep_removes_only_unreferenced_blobs(
        self, storage: Storage, flow: Workflow, clock: FakeClock
    ) -> None:
        """A blob left by a crash between writing and marking done, and the blobs of a
        deleted request (once its cached outputs went unused for the grace period), are
        swept; referenced ones stay."""
        kept, deleted = make_request((1,)), make_request((1,))
        await flow.create(kept)
        await flow.create(deleted)
        for claim in await claim_all(flow):
            data = b"kept" if claim.request_id == kept.request_id else b"deleted"
            await flow.complete(claim, result(data))
        orphan = blob_key(b"crashed before done")
        await storage.put_blob(orphan, b"crashed before done", "image/jpeg", clock.now)
        await flow.finalize(deleted.request_id)
        await flow.delete(deleted.request_id)
        assert await flow.sweep_outputs(grace_seconds=60) == 0  # used within the grace
        assert await flow.sweep_blobs(grace_seconds=60) == 0  # all younger than the grace
        clock.advance(61)
        assert await flow.sweep_outputs(grace_seconds=60) == 1  # the deleted request's
        assert await flow.sweep_blobs(grace_seconds=60) == 2
        with pytest.raises(BlobNotFound):
            await storage.get_blob(orphan)
        with pytest.raises(BlobNotFound):
            await storage.get_blob(blob_key(b"deleted"))
        assert (await flow.image(kept.images[0].image_id)).data == b"kept"

    async def test_recall_returns_a_urls_last_download_and_its_output(
        self, storage: Storage, flow: Workflow, clock: FakeClock
    ) -> None:
        """One call gives what a URL's last download answered and what its bytes became
        under a recipe (none under another recipe or owner)."""
        request = make_request((1,))
        await flow.create(request)
        [claim] = await claim_all(flow)
        url = request.images[0].url
        assert await flow.recall("", url, "recipe") == (None, None)
        output = await flow.complete(claim, result(b"made"), policy="recipe", input_hash="h1")
        await flow.downloaded("", url, request.request_id, "h1", '"e1"', None)
        source, found = await flow.recall("", url, "recipe")
        assert source is not None and (source.input_hash, source.etag) == ("h1", '"e1"')
        assert found is not None and found.output_id == output.output_id
        assert (await flow.recall("", url, "another recipe"))[1] is None
        assert await flow.recall("someone else", url, "recipe") == (None, None)
