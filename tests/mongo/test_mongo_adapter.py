"""What the Mongo adapter promises beyond the contract: its documents, indexes and edges."""

from __future__ import annotations

import anyio
import pytest
from pymongo import AsyncMongoClient

from imgcompress_core import ImageFailure, Settings, StorageUnavailable
from imgcompress_core.model import ImageResult
from imgcompress_core.stores import storage_from_settings
from imgcompress_core.testing.contract import make_request
from imgcompress_mongo import MAX_IMAGE_BYTES, MongoStorage

pytestmark = pytest.mark.anyio


async def opened(uri: str) -> MongoStorage:
    """Return an opened store."""
    store = MongoStorage(uri)
    await store.open()
    return store


async def test_indexes_are_created_idempotently(mongodb_uri: str) -> None:
    """open() creates the claim and lookup indexes, and can run again."""
    store = await opened(mongodb_uri)
    await store.open()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_uri)
    db = client.get_default_database()
    requests = await db.requests.index_information()
    assert any(
        info.get("unique") and info["key"] == [("requestId", 1)] for info in requests.values()
    )
    images = [info["key"] for info in (await db.images.index_information()).values()]
    assert [("state", 1), ("queuedAt", 1), ("order", 1)] in images
    assert [("state", 1), ("leaseExpiresAt", 1)] in images
    await client.close()
    await store.close()


async def test_documents_are_flat_and_keep_the_seed_names(mongodb_uri: str) -> None:
    """One document per request and image, with the seed's field names; bytes as binary."""
    store = await opened(mongodb_uri)
    request = make_request((2,), webhook_url="https://hooks.example/h")
    await store.create_request(request)
    [claim, _] = await store.claim_images("w", 1, 60, 3) + [None]
    assert claim is not None
    data = b"\xff\xd8\xff" + bytes(range(256))
    await store.complete_image(claim, ImageResult(data, "image/jpeg", 4, 3, 999))

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_uri)
    db = client.get_default_database()
    status = await db.requests.find_one({"requestId": request.request_id})
    assert status is not None
    assert status["status"] == "Pending"
    image = await db.images.find_one({"_id": claim.image_id})
    assert image is not None
    assert image["requestId"] == request.request_id
    assert image["productName"] == image["name"] == "SKU1"
    assert image["contentType"] == "image/jpeg"
    assert bytes(image["image"]) == data  # type: ignore[call-overload]
    for doc in (status, image):
        assert not any(isinstance(v, list) and v and isinstance(v[0], dict) for v in doc.values())
    assert await db.images.count_documents({"requestId": request.request_id}) == 2
    await client.close()
    await store.close()


async def test_list_images_never_loads_image_bytes(mongodb_uri: str) -> None:
    """Status reads project the bytes away; only get_image_data returns them."""
    store = await opened(mongodb_uri)
    request = make_request((1,))
    await store.create_request(request)
    [claim] = await store.claim_images("w", 1, 60, 3)
    await store.complete_image(claim, ImageResult(b"x" * 1000, "image/jpeg", 1, 1, 2000))
    original = store._col

    def spy(name: str):  # type: ignore[no-untyped-def]
        collection = original(name)
        if name == "images":
            find = collection.find

            def checked_find(*args, **kwargs):  # type: ignore[no-untyped-def]
                assert kwargs.get("projection") == {"image": 0}
                return find(*args, **kwargs)

            collection.find = checked_find  # type: ignore[method-assign]
        return collection

    store._col = spy  # type: ignore[method-assign]
    [record] = await store.list_images(request.request_id)
    assert record.output_bytes == 1000
    store._col = original  # type: ignore[method-assign]
    assert (await store.get_image_data(claim.image_id)).data == b"x" * 1000
    await store.close()


async def test_oversized_output_is_refused_with_a_reason(mongodb_uri: str) -> None:
    """A result too big for one document raises ImageFailure(output_too_large); nothing stored."""
    store = await opened(mongodb_uri)
    request = make_request((1,))
    await store.create_request(request)
    [claim] = await store.claim_images("w", 1, 60, 3)
    big = b"\0" * (MAX_IMAGE_BYTES + 1)
    with pytest.raises(ImageFailure) as caught:
        await store.complete_image(claim, ImageResult(big, "image/jpeg", 1, 1, len(big)))
    assert caught.value.code == "output_too_large"
    [record] = await store.list_images(request.request_id)
    assert record.state.value == "working"
    await store.close()


async def test_settings_with_a_uri_open_a_mongo_store(mongodb_uri: str) -> None:
    """storage_from_settings finds the adapter through the imgcompress.storage entry point."""
    store = storage_from_settings(Settings(mongodb_uri=mongodb_uri))
    assert isinstance(store, MongoStorage)
    assert store.database_name == mongodb_uri.rsplit("/", 1)[1]
    assert MongoStorage("mongodb://127.0.0.1:1").database_name == "imgcompress"


async def test_two_clients_never_claim_the_same_image(mongodb_uri: str) -> None:
    """Two stores with their own clients (as two processes) claim disjoint images."""
    first, second = await opened(mongodb_uri), await opened(mongodb_uri)
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
    await first.close()
    await second.close()


async def test_unreachable_server_is_storage_unavailable() -> None:
    """Connection trouble becomes the core's StorageUnavailable, not a driver error."""
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        "mongodb://127.0.0.1:9/x", serverSelectionTimeoutMS=300
    )
    store = MongoStorage("mongodb://127.0.0.1:9/x", client=client)
    with pytest.raises(StorageUnavailable):
        await store.open()
    with pytest.raises(StorageUnavailable):
        await store.ping()
    await client.close()
