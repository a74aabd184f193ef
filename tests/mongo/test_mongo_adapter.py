"""What the Mongo adapter promises beyond the contract: documents, indexes, limits, edges."""

from __future__ import annotations

import io
import os
import socket
from collections.abc import AsyncIterator, Mapping
from importlib.metadata import entry_points
from typing import Any

import anyio
import bson
import pytest
from PIL import Image
from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import ServerSelectionTimeoutError

from imgcompress_core import ImageFailure, Settings, StorageUnavailable
from imgcompress_core.model import Failure, ImageResult, ImageState, RequestStatus
from imgcompress_core.options import WorkerConfig
from imgcompress_core.service import Urls
from imgcompress_core.stores import storage_from_settings
from imgcompress_core.testing import RecordingNotifier, StaticFetcher
from imgcompress_core.testing.contract import make_request
from imgcompress_core.worker import Worker
from imgcompress_mongo import MAX_IMAGE_BYTES, MongoStorage
from imgcompress_mongo._schema import INDEXES

pytestmark = pytest.mark.anyio

Doc = dict[str, Any]


@pytest.fixture
async def store(mongodb_uri: str) -> AsyncIterator[MongoStorage]:
    """An opened store on a fresh database."""
    opened = MongoStorage(mongodb_uri)
    await opened.open()
    yield opened
    await opened.close()


def result(data: bytes) -> ImageResult:
    """A processed image with these bytes."""
    return ImageResult(data, "image/jpeg", 4, 3, 999)


async def test_indexes_exist_after_open_and_open_is_idempotent(store: MongoStorage) -> None:
    """open() creates every claim and lookup index, and running it again changes nothing."""
    await store.open()
    for collection in {name for name, _, _ in INDEXES}:
        info = await store.database.get_collection(collection).index_information()
        keys = {tuple(field for field, _ in index["key"]): index for index in info.values()}
        for name, fields, unique in INDEXES:
            if name == collection:
                assert fields in keys, f"{collection} lacks an index on {fields}"
                assert bool(keys[fields].get("unique")) == unique
    images = await store.database.images.index_information()
    claim_keys = [index["key"] for index in images.values()]
    assert [("state", 1), ("seq", 1), ("notBefore", 1)] in claim_keys
    assert [("state", 1), ("leaseExpiresAt", 1)] in claim_keys
    assert [("requestId", 1), ("row", 1), ("position", 1)] in claim_keys


async def test_documents_are_flat_and_keep_the_seed_names(store: MongoStorage) -> None:
    """One flat document per request, product, image and delivery, with the seed's names."""
    request = make_request((2, 1), webhook_url="https://hooks.example/h")
    await store.create_request(request)
    first, second, third = await store.claim_images("w", 3, 60, 3)
    data = b"\xff\xd8\xff" + bytes(range(256))
    await store.complete_image(first, result(data))
    await store.fail_image(second, Failure("upstream_http_404", "gone"))
    await store.complete_image(third, result(b"\xff\xd8"))
    assert await store.finalize_request(request.request_id) is not None

    db = store.database
    status = await db.requests.find_one({"requestId": request.request_id})
    assert status is not None
    assert status["_id"] == status["requestId"] == request.request_id
    assert status["status"] == "Completed"
    assert {"columns", "webhookUrl", "createdAt", "updatedAt", "finishedAt", "totalImages"} <= set(
        status
    )
    image = await db.images.find_one({"_id": first.image_id})
    assert image is not None
    assert image["requestId"] == request.request_id
    assert image["name"] == image["productName"] == "SKU1"
    assert image["contentType"] == "image/jpeg"
    assert image["image"] == data  # BSON binary, read back as bytes
    assert image["state"] == "done"
    for field in ("row", "position", "url", "attempts", "seq", "etag", "outputBytes"):
        assert field in image
    failed = await db.images.find_one({"_id": second.image_id})
    assert failed is not None
    assert (failed["failureCode"], "image" in failed) == ("upstream_http_404", False)
    assert await db.products.count_documents({"requestId": request.request_id}) == 2
    assert await db.images.count_documents({"requestId": request.request_id}) == 3
    assert await db.deliveries.count_documents({"requestId": request.request_id}) == 1
    for name in ("requests", "products", "images", "deliveries", "idempotency"):
        async for doc in db.get_collection(name).find():
            for key, value in doc.items():
                assert not isinstance(value, Mapping), f"{name}.{key} is a sub-document"
                if isinstance(value, list):
                    assert all(isinstance(v, str) for v in value), f"{name}.{key} nests"


class _Replies(monitoring.CommandListener):
    """Records every command's name and raw reply (pymongo command monitoring)."""

    def __init__(self) -> None:
        self.replies: list[tuple[str, bytes]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """Ignore."""

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Keep the reply."""
        self.replies.append((event.command_name, bson.encode(event.reply)))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Ignore."""


async def test_image_bytes_leave_the_server_only_for_get_image_data(mongodb_uri: str) -> None:
    """Status reads, claims and finalizing project the bytes away: no reply carries them."""
    listener = _Replies()
    client: AsyncMongoClient[Doc] = AsyncMongoClient(mongodb_uri, event_listeners=[listener])
    store = MongoStorage(mongodb_uri, client=client)
    await store.open()
    marker = b"\xff\xd8MARKER" + os.urandom(64)
    request = make_request((2,))
    await store.create_request(request)
    first, second = await store.claim_images("w", 2, 60, 3)
    await store.complete_image(first, result(marker))
    await store.renew_claims([first, second], 60)
    await store.retry_image(second, Failure("download_timeout", "slow"), 0)
    [again] = await store.claim_images("w", 5, 60, 3)
    await store.complete_image(first, result(marker))  # the same claim again: a no-op
    await store.complete_image(again, result(b"\xff\xd8"))
    records = await store.list_images(request.request_id)
    assert [r.output_bytes for r in records] == [len(marker), 2]
    assert (await store.progress(request.request_id)).done == 2
    assert await store.finalize_request(request.request_id) is not None
    assert await store.unfinalized_requests(10) == []
    assert [name for name, reply in listener.replies if marker in reply] == []
    assert (await store.get_image_data(first.image_id)).data == marker
    assert [name for name, reply in listener.replies if marker in reply] == ["find"]
    await store.close()
    await client.close()


async def test_oversized_output_is_refused_before_writing(store: MongoStorage) -> None:
    """Bytes over MAX_IMAGE_BYTES raise ImageFailure(output_too_large) and store nothing; the
    claim still holds, so the worker can record the failure; the limit itself fits."""
    request = make_request((2,))
    await store.create_request(request)
    big, fits = await store.claim_images("w", 2, 60, 3)
    with pytest.raises(ImageFailure) as caught:
        await store.complete_image(big, result(b"\0" * (MAX_IMAGE_BYTES + 1)))
    assert caught.value.code == "output_too_large"
    assert str(MAX_IMAGE_BYTES) in caught.value.message
    raw = await store.database.images.find_one({"_id": big.image_id})
    assert raw is not None
    assert (raw["state"], "image" in raw, raw["leaseToken"]) == ("working", False, big.token)
    await store.fail_image(big, Failure(caught.value.code, caught.value.message))
    largest = os.urandom(MAX_IMAGE_BYTES)  # exactly the limit: stored and read back whole
    await store.complete_image(fits, result(largest))
    assert (await store.get_image_data(fits.image_id)).data == largest
    images = {i.image_id: i for i in await store.list_images(request.request_id)}
    assert images[big.image_id].failure == Failure("output_too_large", caught.value.message)
    assert images[fits.image_id].output_bytes == MAX_IMAGE_BYTES


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


async def test_worker_records_an_oversized_output_as_the_image_failure(
    store: MongoStorage,
) -> None:
    """A real worker on the store: output_too_large fails that image, not the worker."""
    store.max_image_bytes = 100  # any real JPEG is larger
    request = make_request((1,))
    await store.create_request(request)
    url = request.images[0].url
    config = WorkerConfig(poll_interval=0.02, cpu_workers=1, retry_base_delay=0.01)
    worker = Worker(
        store, StaticFetcher({url: _jpeg()}), RecordingNotifier(), Urls("http://t"), config
    )
    stop = anyio.Event()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(worker.run, stop)
        with anyio.fail_after(20):
            while (await store.get_request(request.request_id)).status is RequestStatus.PENDING:
                await anyio.sleep(0.02)
        assert worker.alive
        stop.set()
    [image] = await store.list_images(request.request_id)
    assert image.state is ImageState.FAILED
    assert image.failure is not None and image.failure.code == "output_too_large"
    assert (await store.get_request(request.request_id)).status is RequestStatus.FAILED


async def test_progress_counts_every_state(store: MongoStorage) -> None:
    """progress() (a $group aggregation) counts each state right on this server."""
    request = make_request((5,))
    await store.create_request(request)
    done, failed, retried, working = await store.claim_images("w", 4, 60, 3)
    await store.complete_image(done, result(b"\xff\xd8"))
    await store.fail_image(failed, Failure("not_an_image", "no"))
    await store.retry_image(retried, Failure("download_timeout", "slow"), 0)
    progress = await store.progress(request.request_id)
    assert (progress.total, progress.queued, progress.working) == (5, 2, 1)
    assert (progress.done, progress.failed, progress.finished) == (1, 1, 2)
    assert await store.queue_depth() == 2
    assert working.image_id not in {c.image_id for c in await store.claim_images("w", 9, 60, 3)}


async def test_settings_open_a_mongo_store_through_the_entry_point(mongodb_uri: str) -> None:
    """storage_from_settings finds the adapter by URI scheme (mongodb and mongodb+srv)."""
    assert {"mongodb", "mongodb+srv"} <= {e.name for e in entry_points(group="imgcompress.storage")}
    store = storage_from_settings(Settings(mongodb_uri=mongodb_uri))
    assert isinstance(store, MongoStorage)
    assert store.database_name == mongodb_uri.rsplit("/", 1)[1]
    await store.open()
    await store.ping()
    await store.close()
    # Building a store looks nothing up: an SRV URI for a host that cannot exist is fine.
    srv = storage_from_settings(Settings(mongodb_uri="mongodb+srv://db.example.invalid/shop?w=1"))
    assert isinstance(srv, MongoStorage) and srv.database_name == "shop"
    assert MongoStorage("mongodb://127.0.0.1:1").database_name == "imgcompress"
    assert MongoStorage("mongodb://h/?replicaSet=rs").database_name == "imgcompress"
    assert MongoStorage("mongodb://h/db", database="other").database_name == "other"


async def test_writes_use_majority_write_concern(store: MongoStorage, mongodb_uri: str) -> None:
    """The store writes with w=majority (which this server accepted: every write here
    succeeded) and retryable writes; close() leaves a client it was given open."""
    assert store.database.write_concern.document == {"w": "majority"}
    assert store.database.read_concern.level == "majority"
    client: AsyncMongoClient[Doc] = AsyncMongoClient(mongodb_uri)
    assert client.options.retry_writes
    given = MongoStorage(mongodb_uri, client=client)
    await given.open()
    await given.create_request(make_request((1,)))
    await given.close()
    assert await client.get_default_database().images.count_documents({}) == 1
    await client.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_server_is_storage_unavailable() -> None:
    """Connection trouble becomes the core's StorageUnavailable, never a driver error."""
    uri = f"mongodb://127.0.0.1:{_closed_port()}/x"
    with pytest.raises(StorageUnavailable):
        await MongoStorage(uri).ping()  # not open yet
    client: AsyncMongoClient[Doc] = AsyncMongoClient(uri, serverSelectionTimeoutMS=300)
    store = MongoStorage(uri, client=client)
    with pytest.raises(StorageUnavailable) as caught:
        await store.open()
    assert isinstance(caught.value.__cause__, ServerSelectionTimeoutError)
    assert caught.value.retryable
    with pytest.raises(StorageUnavailable):
        await store.ping()
    with pytest.raises(StorageUnavailable):
        await store.claim_images("w", 1, 60, 3)
    # pymongo leaks a socket when a client closes while its monitor is connecting (the
    # cancelled connect is never closed); after the failed selections the monitor goes
    # back to sleep within milliseconds, so let it before closing.
    await anyio.sleep(0.3)
    await store.close()
    await client.close()
