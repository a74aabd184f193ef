"""MongoStorage shared by several clients (as several processes would share it), and
the repairs that make up for having no multi-document transactions."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import anyio
import pytest

from imgcompress_core import ImgCompressError, RequestNotFound
from imgcompress_core.model import ImageResult, NewImage, new_id
from imgcompress_core.testing import FakeClock
from imgcompress_core.testing.contract import make_request
from imgcompress_core.workflow import Leasing, Workflow, delivery_id
from imgcompress_mongo import MongoStorage

pytestmark = pytest.mark.anyio

LEASING = Leasing(lease_seconds=60, max_attempts=3)


@pytest.fixture
async def stores(mongodb_uri: str) -> AsyncIterator[tuple[MongoStorage, MongoStorage]]:
    """Two opened stores on one fresh database, each with its own client."""
    first, second = MongoStorage(mongodb_uri), MongoStorage(mongodb_uri)
    await first.open()
    await second.open()
    yield first, second
    await first.close()
    await second.close()


@pytest.fixture
def flows(stores: tuple[MongoStorage, MongoStorage]) -> tuple[Workflow, Workflow]:
    """A workflow over each client, on one shared clock (as two processes would be)."""
    clock = FakeClock()
    first, second = stores
    return Workflow.over(first, clock=clock), Workflow.over(second, clock=clock)


def done() -> ImageResult:
    """A small processed image."""
    return ImageResult(b"\xff\xd8ok", "image/jpeg", 1, 1, 10)


async def test_two_clients_never_claim_the_same_image(flows: tuple[Workflow, Workflow]) -> None:
    """Six claimers on two clients take 30 images: each image exactly once."""
    first, second = flows
    await first.create(make_request((10, 10, 10)))
    got: list[str] = []

    async def claimer(flow: Workflow, name: str) -> None:
        for _ in range(8):
            got.extend(c.image_id for c in await flow.claim(name, 2, LEASING))

    async with anyio.create_task_group() as tasks:
        for n in range(3):
            tasks.start_soon(claimer, first, f"a{n}")
            tasks.start_soon(claimer, second, f"b{n}")
    assert len(got) == len(set(got)) == 30
    assert await first.claim("late", 10, LEASING) == []


async def test_a_request_is_claimed_in_csv_order_across_clients(
    flows: tuple[Workflow, Workflow],
) -> None:
    """Claims taking turns between two clients walk one request in row and position order,
    and so does each of several claimers running at once."""
    first, second = flows
    request = make_request((2, 3, 1))
    await second.create(request)
    in_order = [i.image_id for i in request.images]
    claimed: list[str] = []
    for limit, flow in zip((1, 2, 1, 2), (first, second, first, second), strict=True):
        claimed += [c.image_id for c in await flow.claim("w", limit, LEASING)]
    assert claimed == in_order

    concurrent = make_request((4, 4, 4))
    await first.create(concurrent)
    position = {i.image_id: n for n, i in enumerate(concurrent.images)}
    per_claimer: dict[str, list[int]] = {}

    async def claimer(flow: Workflow, name: str) -> None:
        mine = per_claimer.setdefault(name, [])
        while claims := await flow.claim(name, 1, LEASING):
            mine += [position[c.image_id] for c in claims]

    async with anyio.create_task_group() as tasks:
        for n in range(2):
            tasks.start_soon(claimer, first, f"a{n}")
            tasks.start_soon(claimer, second, f"b{n}")
    for seen in per_claimer.values():  # each claimer's next image comes later in the CSV
        assert seen == sorted(seen)
    assert sorted(n for seen in per_claimer.values() for n in seen) == list(range(12))


async def test_a_small_request_after_a_large_one_gets_a_slot_in_the_first_claim(
    flows: tuple[Workflow, Workflow],
) -> None:
    """Fair turns across clients: a one-image request uploaded through one client after a
    20-image request uploaded through the other is served in the very first claim."""
    first, second = flows
    large, small = make_request((20,)), make_request((1,))
    await first.create(large)
    await second.create(small)
    claims = await first.claim("w", 4, LEASING)
    assert len(claims) == 4
    assert small.images[0].image_id in {c.image_id for c in claims}
    taken = [c.image_id for c in claims if c.request_id == large.request_id]
    assert taken == [i.image_id for i in large.images[:3]]


async def test_concurrent_creates_through_two_clients_are_all_claimable_in_order(
    flows: tuple[Workflow, Workflow],
) -> None:
    """Many creates at once through two clients: every image is claimed exactly once, and
    each request's images in their CSV order."""
    first, second = flows
    requests = [make_request((2, 1)) for _ in range(10)]
    async with anyio.create_task_group() as tasks:
        for index, request in enumerate(requests):
            tasks.start_soon((first if index % 2 else second).create, request)
    claims = await first.claim("w", 100, LEASING)
    assert len(claims) == len({c.image_id for c in claims}) == 30
    for request in requests:
        mine = [c.image_id for c in claims if c.request_id == request.request_id]
        assert mine == [i.image_id for i in request.images]
    assert await second.claim("w", 100, LEASING) == []


async def test_finalize_races_across_clients_have_one_winner(
    stores: tuple[MongoStorage, MongoStorage], flows: tuple[Workflow, Workflow]
) -> None:
    """Eight finalizers on two clients: one gets the record, one delivery is queued."""
    first, second = flows
    request = make_request((2,), webhook_url="https://hooks.example/x")
    await first.create(request)
    for claim in await second.claim("w", 10, LEASING):
        await second.complete(claim, done())
    winners = []

    async def finalize(flow: Workflow) -> None:
        if await flow.finalize(request.request_id) is not None:
            winners.append(flow)

    async with anyio.create_task_group() as tasks:
        for n in range(8):
            tasks.start_soon(finalize, first if n % 2 else second)
    assert len(winners) == 1
    deliveries = await stores[0].list_deliveries(request.request_id)
    assert [d.delivery_id for d in deliveries] == [delivery_id(request.request_id)]


async def test_a_crash_between_finalize_and_the_webhook_is_repaired(
    stores: tuple[MongoStorage, MongoStorage], flows: tuple[Workflow, Workflow]
) -> None:
    """A request finalized by a worker that died before queueing its delivery is found by
    the sweep, gets exactly one delivery, and is not returned as newly final again."""
    store, _ = stores
    flow, _ = flows
    request = make_request((1,), webhook_url="https://hooks.example/y")
    await flow.create(request)
    [claim] = await flow.claim("w", 1, LEASING)
    await flow.complete(claim, done())
    assert await flow.finalize(request.request_id) is not None
    # What a crash right after the status change leaves behind:
    await store.database.deliveries.delete_many({"requestId": request.request_id})
    await store.database.requests.update_one(
        {"_id": request.request_id}, {"$set": {"webhookQueued": False}}
    )
    assert await flow.unfinalized(10) == [request.request_id]
    assert await flow.finalize(request.request_id) is None
    assert await flow.finalize(request.request_id) is None
    deliveries = await store.list_deliveries(request.request_id)
    assert [d.delivery_id for d in deliveries] == [delivery_id(request.request_id)]
    assert await flow.unfinalized(10) == []
    [due] = await flow.claim_deliveries("w", 10, 60)
    assert due.delivery_id == delivery_id(request.request_id)


async def test_a_failed_create_is_undone_and_frees_its_key(
    stores: tuple[MongoStorage, MongoStorage], flows: tuple[Workflow, Workflow]
) -> None:
    """A create that fails half-way leaves nothing claimable behind, touches no other
    request, and its Idempotency-Key can be used again."""
    store, _ = stores
    flow, _ = flows
    other = make_request((1,))
    await flow.create(other)
    clash = NewImage(other.images[0].image_id, 2, 1, "https://img.example/clash.jpg")
    broken = make_request((1,))
    broken = dataclasses.replace(
        broken, images=(*broken.images, clash), idempotency_key="k1", body_hash="h"
    )
    with pytest.raises(ImgCompressError) as caught:
        await flow.create(broken)
    assert caught.value.code == "storage_error"
    with pytest.raises(RequestNotFound):
        await store.get_request(broken.request_id)
    for name in ("images", "products", "idempotency"):
        found = await store.database.get_collection(name).count_documents(
            {"requestId": broken.request_id}
        )
        assert found == 0
    assert [c.image_id for c in await flow.claim("w", 10, LEASING)] == [clash.image_id]
    fixed = dataclasses.replace(
        broken, images=(NewImage(new_id(), 2, 1, clash.url),), request_id=new_id()
    )
    assert await flow.create(fixed) == fixed.request_id
    assert await flow.create(dataclasses.replace(fixed, request_id=new_id())) == (fixed.request_id)
