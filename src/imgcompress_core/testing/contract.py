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
from ..ports import Storage
from .fakes import FakeClock

__all__ = ["StorageContract", "make_request"]

LEASE = 60.0
MAX_ATTEMPTS = 3


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
            NewImage(new_id(), row, position, f"https://img.example/{row}/{position}.jpg")
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


async def claim_all(storage: Storage, owner: str = "w1", limit: int = 100) -> list[Claim]:
    """Claim every claimable image."""
    return await storage.claim_images(owner, limit, LEASE, MAX_ATTEMPTS)


@pytest.mark.anyio
class StorageContract:
    """Every Storage must pass these tests; subclass and provide a ``storage`` fixture."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        """Return the clock the store under test must use."""
        return FakeClock()

    @pytest.fixture
    def storage(self, clock: FakeClock) -> AsyncIterator[Storage]:
        """Provide an opened, empty store that reads time from ``clock`` (override this)."""
        raise NotImplementedError("subclasses provide the storage fixture")

    # -- requests ---------------------------------------------------------------------

    async def test_create_and_read_back(self, storage: Storage) -> None:
        """A stored request reads back with its products, images and progress."""
        request = make_request((2, 1), webhook_url="https://hooks.example/x")
        await storage.create_request(request)
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
        progress = await storage.progress(request.request_id)
        assert (progress.total, progress.queued, progress.finished) == (3, 3, 0)

    async def test_idempotency_key_returns_the_first_request(self, storage: Storage) -> None:
        """The same key and body give back the first id and store nothing; another body
        is a conflict; deleting the request frees the key."""
        first = dataclasses.replace(make_request((2,)), idempotency_key="k1", body_hash="h1")
        assert await storage.create_request(first) == first.request_id
        again = dataclasses.replace(make_request((2,)), idempotency_key="k1", body_hash="h1")
        assert await storage.create_request(again) == first.request_id
        with pytest.raises(RequestNotFound):
            await storage.get_request(again.request_id)
        assert await storage.queue_depth() == 2
        other = dataclasses.replace(make_request((1,)), idempotency_key="k1", body_hash="h2")
        with pytest.raises(IdempotencyConflict):
            await storage.create_request(other)
        for claim in await claim_all(storage):
            await storage.fail_image(claim, Failure("x", "y"))
        await storage.finalize_request(first.request_id)
        await storage.delete_request(first.request_id)
        assert await storage.create_request(other) == other.request_id

    async def test_unknown_ids_raise_not_found(self, storage: Storage) -> None:
        """Unknown request and image ids raise the core's NotFound errors."""
        with pytest.raises(RequestNotFound):
            await storage.get_request("missing")
        with pytest.raises(RequestNotFound):
            await storage.list_images("missing")
        with pytest.raises(RequestNotFound):
            await storage.progress("missing")
        with pytest.raises(ImageNotFound):
            await storage.get_image_data("missing")

    async def test_requests_are_isolated(self, storage: Storage) -> None:
        """One request's images never show up in another's."""
        first, second = make_request((1,)), make_request((2,))
        await storage.create_request(first)
        await storage.create_request(second)
        assert len(await storage.list_images(first.request_id)) == 1
        assert (await storage.progress(second.request_id)).total == 2

    # -- claims -----------------------------------------------------------------------

    async def test_claims_lease_each_image_once(self, storage: Storage) -> None:
        """Claims respect the limit, count attempts, and never hand out an image twice."""
        request = make_request((3, 2))
        await storage.create_request(request)
        first = await storage.claim_images("w1", 2, LEASE, MAX_ATTEMPTS)
        second = await storage.claim_images("w2", 10, LEASE, MAX_ATTEMPTS)
        assert len(first) == 2
        assert len(second) == 3
        ids = [c.image_id for c in first + second]
        assert sorted(ids) == sorted(i.image_id for i in request.images)
        assert all(c.attempt == 1 and c.request_id == request.request_id for c in first + second)
        assert await storage.claim_images("w3", 10, LEASE, MAX_ATTEMPTS) == []
        progress = await storage.progress(request.request_id)
        assert (progress.queued, progress.working) == (0, 5)

    async def test_queue_depth_counts_waiting_images(self, storage: Storage) -> None:
        """Queued images across requests are counted; claimed ones are not."""
        assert await storage.queue_depth() == 0
        await storage.create_request(make_request((2, 1)))
        await storage.create_request(make_request((2,)))
        assert await storage.queue_depth() == 5
        await storage.claim_images("w", 2, LEASE, MAX_ATTEMPTS)
        assert await storage.queue_depth() == 3

    async def test_concurrent_claims_never_overlap(self, storage: Storage) -> None:
        """Many claimers at once get disjoint sets of images."""
        request = make_request((10, 10, 10))
        await storage.create_request(request)
        got: list[str] = []

        async def claimer(name: str) -> None:
            for _ in range(5):
                got.extend(
                    c.image_id for c in await storage.claim_images(name, 3, LEASE, MAX_ATTEMPTS)
                )

        async with anyio.create_task_group() as tasks:
            for n in range(6):
                tasks.start_soon(claimer, f"w{n}")
        assert len(got) == len(set(got)) == 30

    async def test_expired_lease_is_taken_over_and_fences_the_old_owner(
        self, storage: Storage, clock: FakeClock
    ) -> None:
        """After the lease expires another worker claims the image; the old claim is dead."""
        request = make_request((1,))
        await storage.create_request(request)
        [old] = await claim_all(storage, "w1")
        clock.advance(LEASE / 2)
        assert await claim_all(storage, "w2") == []
        clock.advance(LEASE)
        [new] = await claim_all(storage, "w2")
        assert new.image_id == old.image_id
        assert new.attempt == 2
        assert new.token != old.token
        with pytest.raises(LeaseLost):
            await storage.complete_image(old, result())
        with pytest.raises(LeaseLost):
            await storage.fail_image(old, Failure("x", "y"))
        await storage.complete_image(new, result())
        [image] = await storage.list_images(request.request_id)
        assert image.state is ImageState.DONE

    async def test_expired_leases_come_before_the_queue(
        self, storage: Storage, clock: FakeClock
    ) -> None:
        """A dead worker's image is taken over before any queued image, in queue order."""
        first = make_request((1,))
        await storage.create_request(first)
        [dead] = await claim_all(storage, "w1")
        later = make_request((5,))
        await storage.create_request(later)
        clock.advance(LEASE + 1)
        claims = await storage.claim_images("w2", 2, LEASE, MAX_ATTEMPTS)
        assert claims[0].image_id == dead.image_id
        assert claims[1].image_id == later.images[0].image_id

    async def test_queue_is_claimed_in_upload_order(self, storage: Storage) -> None:
        """Images are claimed in the order they were stored, across requests."""
        first, second = make_request((2,)), make_request((2,))
        await storage.create_request(first)
        await storage.create_request(second)
        claimed = []
        for _ in range(4):
            claimed += [c.image_id for c in await storage.claim_images("w", 1, LEASE, 9)]
        assert claimed == [i.image_id for i in first.images + second.images]

    async def test_image_that_keeps_killing_workers_fails(
        self, storage: Storage, clock: FakeClock
    ) -> None:
        """After max_attempts expired leases the image fails with worker_lost, not again."""
        request = make_request((1,))
        await storage.create_request(request)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            [claim] = await claim_all(storage)
            assert claim.attempt == attempt
            clock.advance(LEASE + 1)
        assert await claim_all(storage) == []
        [image] = await storage.list_images(request.request_id)
        assert image.state is ImageState.FAILED
        assert image.failure is not None and image.failure.code == "worker_lost"
        assert await storage.unfinalized_requests(10) == [request.request_id]
        final = await storage.finalize_request(request.request_id)
        assert final is not None and final.status is RequestStatus.FAILED

    async def test_renewed_lease_is_not_taken_over(
        self, storage: Storage, clock: FakeClock
    ) -> None:
        """Renewing keeps the image; a claim that lost its image is not renewed."""
        request = make_request((2,))
        await storage.create_request(request)
        kept, lost = await claim_all(storage)
        clock.advance(LEASE - 1)
        assert await storage.renew_claims([kept], LEASE) == [kept]
        clock.advance(2)
        [taken] = await claim_all(storage, "w2")
        assert taken.image_id == lost.image_id
        assert await storage.renew_claims([kept, lost], LEASE) == [kept]
        await storage.complete_image(kept, result())

    # -- finishing images -------------------------------------------------------------

    async def test_complete_stores_the_image(self, storage: Storage) -> None:
        """A completed image is done, with its sizes, and its bytes are served back."""
        request = make_request((1,))
        await storage.create_request(request)
        [claim] = await claim_all(storage)
        data = b"\xff\xd8some jpeg bytes"
        await storage.complete_image(
            claim,
            ImageResult(data, "image/jpeg", width=640, height=480, input_bytes=5000, note="n"),
        )
        [image] = await storage.list_images(request.request_id)
        assert image.state is ImageState.DONE
        assert (image.input_bytes, image.output_bytes) == (5000, len(data))
        assert (image.width, image.height, image.content_type) == (640, 480, "image/jpeg")
        assert image.note == "n"
        assert image.failure is None
        stored = await storage.get_image_data(claim.image_id)
        assert (stored.data, stored.content_type) == (data, "image/jpeg")
        assert stored.etag
        assert (await storage.get_image_data(claim.image_id)).etag == stored.etag

    async def test_complete_is_idempotent_for_the_same_claim(self, storage: Storage) -> None:
        """Completing twice with the same claim (a retry after a crash) changes nothing."""
        request = make_request((1,))
        await storage.create_request(request)
        [claim] = await claim_all(storage)
        await storage.complete_image(claim, result())
        await storage.complete_image(claim, result())
        progress = await storage.progress(request.request_id)
        assert (progress.done, progress.total) == (1, 1)

    async def test_final_images_cannot_change(self, storage: Storage) -> None:
        """A done or failed image rejects every further change, even from its own claim."""
        request = make_request((2,))
        await storage.create_request(request)
        done, failed = await claim_all(storage)
        await storage.complete_image(done, result())
        await storage.fail_image(failed, Failure("not_an_image", "not an image"))
        with pytest.raises(IllegalTransition):
            await storage.fail_image(done, Failure("x", "y"))
        with pytest.raises(IllegalTransition):
            await storage.retry_image(failed, Failure("x", "y"), 0)
        with pytest.raises(IllegalTransition):
            await storage.complete_image(failed, result())
        images = {i.image_id: i for i in await storage.list_images(request.request_id)}
        assert images[done.image_id].state is ImageState.DONE
        assert images[failed.image_id].state is ImageState.FAILED
        assert images[failed.image_id].failure == Failure("not_an_image", "not an image")
        with pytest.raises(ImageNotFound):
            await storage.get_image_data(failed.image_id)

    async def test_retry_waits_until_not_before(self, storage: Storage, clock: FakeClock) -> None:
        """A retried image is queued again but not claimable before its time."""
        request = make_request((1,))
        await storage.create_request(request)
        [claim] = await claim_all(storage)
        await storage.retry_image(claim, Failure("download_timeout", "slow"), clock.now + 10)
        [image] = await storage.list_images(request.request_id)
        assert image.state is ImageState.QUEUED
        assert image.failure == Failure("download_timeout", "slow")
        assert await claim_all(storage) == []
        clock.advance(11)
        [again] = await claim_all(storage)
        assert again.attempt == 2
        with pytest.raises(LeaseLost):
            await storage.complete_image(claim, result())

    # -- finalizing -------------------------------------------------------------------

    async def test_finalize_waits_for_every_image(self, storage: Storage) -> None:
        """A request is final only when every image is, and becomes Completed exactly once."""
        request = make_request((2,), webhook_url="https://hooks.example/done")
        await storage.create_request(request)
        first, second = await claim_all(storage)
        await storage.complete_image(first, result())
        assert await storage.finalize_request(request.request_id) is None
        await storage.fail_image(second, Failure("upstream_http_404", "gone"))
        final = await storage.finalize_request(request.request_id)
        assert final is not None
        assert final.status is RequestStatus.COMPLETED
        assert final.finished_at is not None
        assert await storage.finalize_request(request.request_id) is None
        assert (await storage.get_request(request.request_id)).status is RequestStatus.COMPLETED
        [delivery] = await storage.list_deliveries(request.request_id)
        assert delivery.state is DeliveryState.PENDING
        assert delivery.url == "https://hooks.example/done"

    async def test_request_with_no_success_fails(self, storage: Storage) -> None:
        """When every image failed the request ends Failed; no webhook means no delivery."""
        request = make_request((1,))
        await storage.create_request(request)
        [claim] = await claim_all(storage)
        await storage.fail_image(claim, Failure("not_an_image", "nope"))
        final = await storage.finalize_request(request.request_id)
        assert final is not None
        assert final.status is RequestStatus.FAILED
        assert await storage.list_deliveries(request.request_id) == []

    async def test_lost_finalize_is_found_again(self, storage: Storage) -> None:
        """A request whose images all finished but was never finalized shows up for a sweep."""
        request, other = make_request((2,)), make_request((1,))
        await storage.create_request(request)
        await storage.create_request(other)
        claims = await claim_all(storage)
        for claim in claims:
            if claim.request_id == request.request_id:
                await storage.complete_image(claim, result())
        assert await storage.unfinalized_requests(10) == [request.request_id]
        assert await storage.finalize_request(request.request_id) is not None
        assert await storage.unfinalized_requests(10) == []

    async def test_cancel_fails_unfinished_images_and_fences_their_workers(
        self, storage: Storage
    ) -> None:
        """Cancelling keeps done images, fails the rest as cancelled, and kills live claims."""
        request = make_request((3,), webhook_url="https://hooks.example/c")
        await storage.create_request(request)
        done, working = await storage.claim_images("w", 2, LEASE, MAX_ATTEMPTS)
        await storage.complete_image(done, result())
        await storage.cancel_request(request.request_id)
        images = {i.image_id: i for i in await storage.list_images(request.request_id)}
        assert images[done.image_id].state is ImageState.DONE
        others = [i for i in images.values() if i.image_id != done.image_id]
        assert {i.state for i in others} == {ImageState.FAILED}
        assert {i.failure.code for i in others if i.failure} == {"cancelled"}
        with pytest.raises(LeaseLost):
            await storage.complete_image(working, result())
        assert await claim_all(storage) == []
        final = await storage.finalize_request(request.request_id)
        assert final is not None and final.status is RequestStatus.COMPLETED
        assert (await storage.get_image_data(done.image_id)).data == result().data

    async def test_delete_removes_everything(self, storage: Storage, clock: FakeClock) -> None:
        """A deleted request, its images, bytes and deliveries are gone; others stay."""
        request, other = make_request((1,), webhook_url="https://h.example/d"), make_request((1,))
        await storage.create_request(request)
        await storage.create_request(other)
        for claim in await claim_all(storage):
            await storage.complete_image(claim, result())
        await storage.finalize_request(request.request_id)
        await storage.finalize_request(other.request_id)
        clock.advance(100)
        assert set(await storage.finished_before(clock.now, 10)) == {
            request.request_id,
            other.request_id,
        }
        assert await storage.finished_before(clock.now - 200, 10) == []
        await storage.delete_request(request.request_id)
        with pytest.raises(RequestNotFound):
            await storage.get_request(request.request_id)
        with pytest.raises(ImageNotFound):
            await storage.get_image_data(request.images[0].image_id)
        assert await storage.claim_deliveries("w", 10, LEASE) == []  # its webhook went too
        assert await storage.finished_before(clock.now, 10) == [other.request_id]
        assert (await storage.get_request(other.request_id)).status is RequestStatus.COMPLETED
        with pytest.raises(RequestNotFound):
            await storage.delete_request(request.request_id)

    async def test_base_url_and_owner_are_kept(self, storage: Storage) -> None:
        """The public base URL and the owner given at upload read back with the request."""
        request = dataclasses.replace(
            make_request((1,)), base_url="https://img.example", owner="key-fingerprint"
        )
        await storage.create_request(request)
        record = await storage.get_request(request.request_id)
        assert record.base_url == "https://img.example"
        assert record.owner == "key-fingerprint"

    async def test_concurrent_finalize_has_one_winner(self, storage: Storage) -> None:
        """Many workers finalizing the same request at once: exactly one succeeds."""
        request = make_request((3,), webhook_url="https://hooks.example/x")
        await storage.create_request(request)
        for claim in await claim_all(storage):
            await storage.complete_image(claim, result())
        winners = []

        async def finalize() -> None:
            if await storage.finalize_request(request.request_id) is not None:
                winners.append(1)

        async with anyio.create_task_group() as tasks:
            for _ in range(8):
                tasks.start_soon(finalize)
        assert len(winners) == 1
        assert len(await storage.list_deliveries(request.request_id)) == 1

    # -- webhook deliveries -----------------------------------------------------------

    async def _finished_with_webhook(self, storage: Storage) -> str:
        request = make_request((1,), webhook_url="https://hooks.example/y")
        await storage.create_request(request)
        [claim] = await claim_all(storage)
        await storage.complete_image(claim, result())
        assert await storage.finalize_request(request.request_id) is not None
        return request.request_id

    async def test_delivery_retry_then_success(self, storage: Storage, clock: FakeClock) -> None:
        """A failed delivery comes back when due; a delivered one never does."""
        request_id = await self._finished_with_webhook(storage)
        [claim] = await storage.claim_deliveries("w1", 10, LEASE)
        assert (claim.request_id, claim.url, claim.attempt) == (
            request_id,
            "https://hooks.example/y",
            1,
        )
        assert await storage.claim_deliveries("w2", 10, LEASE) == []
        await storage.record_delivery(
            claim, delivered=False, error="HTTP 500", next_attempt_at=clock.now + 30
        )
        [pending] = await storage.list_deliveries(request_id)
        assert (pending.state, pending.attempts, pending.last_error) == (
            DeliveryState.PENDING,
            1,
            "HTTP 500",
        )
        assert await storage.claim_deliveries("w1", 10, LEASE) == []
        clock.advance(31)
        [again] = await storage.claim_deliveries("w1", 10, LEASE)
        assert again.attempt == 2
        with pytest.raises(LeaseLost):
            await storage.record_delivery(claim, delivered=True, error=None, next_attempt_at=None)
        await storage.record_delivery(again, delivered=True, error=None, next_attempt_at=None)
        [delivered] = await storage.list_deliveries(request_id)
        assert delivered.state is DeliveryState.DELIVERED
        assert delivered.delivered_at is not None
        clock.advance(1000)
        assert await storage.claim_deliveries("w1", 10, LEASE) == []

    async def test_delivery_given_up(self, storage: Storage) -> None:
        """A delivery recorded with no next attempt is failed for good."""
        request_id = await self._finished_with_webhook(storage)
        [claim] = await storage.claim_deliveries("w1", 10, LEASE)
        await storage.record_delivery(claim, delivered=False, error="410", next_attempt_at=None)
        [delivery] = await storage.list_deliveries(request_id)
        assert delivery.state is DeliveryState.FAILED
        assert await storage.claim_deliveries("w1", 10, LEASE) == []

    async def test_expired_delivery_lease_is_taken_over(
        self, storage: Storage, clock: FakeClock
    ) -> None:
        """A delivery whose sender died is claimed again after its lease."""
        await self._finished_with_webhook(storage)
        [first] = await storage.claim_deliveries("w1", 10, LEASE)
        clock.advance(LEASE + 1)
        [second] = await storage.claim_deliveries("w2", 10, LEASE)
        assert second.delivery_id == first.delivery_id
        assert second.attempt == 2
