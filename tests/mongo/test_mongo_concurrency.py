"""MongoStorage shared by several clients (as several processes would share it), and
the repairs that make up for having no multi-document transactions."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import anyio
import pytest

from imgcompress_core import ImgCompressError, RequestNotFound
from imgcompress_core.model import ImageResult, NewImage, new_id
from imgcompress_core.testing.contract import make_request
from imgcompress_mongo import MongoStorage

pytestmark = pytest.mark.anyio


@pytest.fixture
async def stores(mongodb_uri: str) -> AsyncIterator[tuple[MongoStorage, MongoStorage]]:
    """Two opened stores on one fresh database, each with its own client."""
    first, second = MongoStorage(mongodb_uri), MongoStorage(mongodb_uri)
    await first.open()
    await second.open()
    yield first, second
    await first.close()
    await second.close()


def done() -> ImageResult:
    """A small processed image."""
    return ImageResult(b"\xff\xd8ok", "image/jpeg", 1, 1, 10)


async def test_two_clients_never_claim_the_same_image(
    stores: tuple[MongoStorage, MongoStorage],
) -> None:
    """Six claimers on two clients take 30 images: each image exactly once."""
    first, second = stores
    await first.create_request(make_request((10, 10, 10)))
    got: list[str] = []

    async def claimer(store: MongoStorage, name: str) -> None:
        for _ in range(8):
            got.extend(c.image_id for c in await store.claim_images(name, 2, 60, 3))

    async with anyio.create_task_group() as tasks:
        for n in range(3):
            tasks.start_soon(claimer, first, f"a{n}")
            tasks.start_soon(claimer, second, f"b{n}")
    assert len(got) == len(set(got)) == 30
    assert await first.claim_images("late", 10, 60, 3) == []


async def test_queue_is_first_in_first_out_across_clients(
    stores: tuple[MongoStorage, MongoStorage],
) -> None:
    """Requests created through different clients are claimed in the order they came."""
    first, second = stores
    requests = [make_request((2, 1)) for _ in range(4)]
    for index, request in enumerate(requests):
        await (first if index % 2 else second).create_request(request)
    claims = await second.claim_images("w", 100, 60, 3)
    assert [c.image_id for c in claims] == [i.image_id for r in requests for i in r.images]
    seqs = [d["seq"] async for d in first.database.images.find().sort("seq", 1)]
    assert len(seqs) == len(set(seqs)) == 12


async def test_concurrent_creates_get_distinct_sequence_numbers(
    stores: tuple[MongoStorage, MongoStorage],
) -> None:
    """Many creates at once through two clients: every image gets its own seq."""
    first, second = stores
    requests = [make_request((3,)) for _ in range(10)]
    async with anyio.create_task_group() as tasks:
        for index, request in enumerate(requests):
            tasks.start_soon((first if index % 2 else second).create_request, request)
    seq = {d["_id"]: d["seq"] async for d in first.database.images.find()}
    assert len(seq) == len(set(seq.values())) == 30
    for request in requests:  # each request's images are consecutive, in their order
        mine = [seq[i.image_id] for i in request.images]
        assert mine == list(range(mine[0], mine[0] + 3))


async def test_finalize_races_across_clients_have_one_winner(
    stores: tuple[MongoStorage, MongoStorage],
) -> None:
    """Eight finalizers on two clients: one gets the record, one delivery is queued."""
    first, second = stores
    request = make_request((2,), webhook_url="https://hooks.example/x")
    await first.create_request(request)
    for claim in await second.claim_images("w", 10, 60, 3):
        await second.complete_image(claim, done())
    winners = []

    async def finalize(store: MongoStorage) -> None:
        if await store.finalize_request(request.request_id) is not None:
            winners.append(store)

    async with anyio.create_task_group() as tasks:
        for n in range(8):
            tasks.start_soon(finalize, first if n % 2 else second)
    assert len(winners) == 1
    assert len(await first.list_deliveries(request.request_id)) == 1


async def test_a_crash_between_finalize_and_the_webhook_is_repaired(
    stores: tuple[MongoStorage, MongoStorage],
) -> None:
    """A request finalized by a worker that died before queueing its delivery is found by
    the sweep, gets exactly one delivery, and is not returned as newly final again."""
    store, _ = stores
    request = make_request((1,), webhook_url="https://hooks.example/y")
    await store.create_request(request)
    [claim] = await store.claim_images("w", 1, 60, 3)
    await store.complete_image(claim, done())
    assert await store.finalize_request(request.request_id) is not None
    # What a crash right after the status change leaves behind:
    await store.database.deliveries.delete_many({"requestId": request.request_id})
    await store.database.requests.update_one(
        {"_id": request.request_id}, {"$set": {"webhookQueued": False}}
    )
    assert await store.unfinalized_requests(10) == [request.request_id]
    assert await store.finalize_request(request.request_id) is None
    assert await store.finalize_request(request.request_id) is None
    assert len(await store.list_deliveries(request.request_id)) == 1
    assert await store.unfinalized_requests(10) == []


async def test_a_failed_create_is_undone_and_frees_its_key(
    stores: tuple[MongoStorage, MongoStorage],
) -> None:
    """A create that fails half-way leaves nothing claimable behind, touches no other
    request, and its Idempotency-Key can be used again."""
    store, _ = stores
    other = make_request((1,))
    await store.create_request(other)
    clash = NewImage(other.images[0].image_id, 2, 1, "https://img.example/clash.jpg")
    broken = make_request((1,))
    broken = dataclasses.replace(
        broken, images=(*broken.images, clash), idempotency_key="k1", body_hash="h"
    )
    with pytest.raises(ImgCompressError) as caught:
        await store.create_request(broken)
    assert caught.value.code == "storage_error"
    with pytest.raises(RequestNotFound):
        await store.get_request(broken.request_id)
    for name in ("images", "products"):
        found = await store.database.get_collection(name).count_documents(
            {"requestId": broken.request_id}
        )
        assert found == 0
    assert [c.image_id for c in await store.claim_images("w", 10, 60, 3)] == [clash.image_id]
    fixed = dataclasses.replace(
        broken, images=(NewImage(new_id(), 2, 1, clash.url),), request_id=new_id()
    )
    assert await store.create_request(fixed) == fixed.request_id
    assert await store.create_request(dataclasses.replace(fixed, request_id=new_id())) == (
        fixed.request_id
    )
