"""The storage contract's second half: finalizing, webhook deliveries, blobs and the
sweep, and the reuse cache (mixed into :class:`~.contract.StorageContract`)."""

from __future__ import annotations

import dataclasses

import anyio
import pytest

from ..errors import (
    BlobNotFound,
    ImageNotFound,
    LeaseLost,
    RequestNotFound,
)
from ..model import (
    DeliveryState,
    Failure,
    ImageState,
    RequestStatus,
)
from ..ports import Storage
from ..workflow import Workflow, blob_key
from ._contract_kit import LEASE, LEASING, claim_all, make_request, result
from .fakes import FakeClock

__all__ = ["AfterClaimsContract"]


@pytest.mark.anyio
class AfterClaimsContract:
    """Tests of what follows claims; run through StorageContract, which has the fixtures."""

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
