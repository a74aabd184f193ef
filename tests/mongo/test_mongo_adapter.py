"""What the Mongo adapter promises beyond the contract: documents, indexes, limits, edges."""

from __future__ import annotations

import io
import os
import socket
from collections.abc import AsyncIterator, Mapping, MutableMapping
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
from imgcompress_core.testing import FakeClock, RecordingNotifier, StaticFetcher
from imgcompress_core.testing.contract import make_request
from imgcompress_core.worker import Worker
from imgcompress_core.workflow import Leasing, Workflow, blob_key, delivery_id
from imgcompress_mongo import MAX_IMAGE_BYTES, MongoStorage, _blobs
from imgcompress_mongo._schema import INDEXES

pytestmark = pytest.mark.anyio

Doc = dict[str, Any]

LEASING = Leasing(lease_seconds=60, max_attempts=3)


@pytest.fixture
async def store(mongodb_uri: str) -> AsyncIterator[MongoStorage]:
    """An opened store on a fresh database."""
    opened = MongoStorage(mongodb_uri)
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
def clock() -> FakeClock:
    """The time the workflow stamps on the store."""
    return FakeClock()


@pytest.fixture
def flow(store: MongoStorage, clock: FakeClock) -> Workflow:
    """The workflow over the store (the store's only caller)."""
    return Workflow.over(store, clock=clock)


def result(data: bytes) -> ImageResult:
    """A processed image with these bytes."""
    return ImageResult(data, "image/jpeg", 4, 3, 999)


async def test_indexes_exist_after_open_and_open_is_idempotent(store: MongoStorage) -> None:
    """open() creates every claim and lookup index, and running it again changes nothing."""
    names = sorted({name for name, _, _ in INDEXES})

    async def indexes() -> dict[str, MutableMapping[str, Any]]:
        return {n: await store.database.get_collection(n).index_information() for n in names}

    before = await indexes()
    await store.open()
    assert await indexes() == before
    for collection, fields, unique in INDEXES:
        keys = {tuple(f for f, _ in index["key"]): index for index in before[collection].values()}
        assert fields in keys, f"{collection} lacks an index on {fields}"
        assert bool(keys[fields].get("unique")) == unique
    claim_keys = [index["key"] for index in before["images"].values()]
    # Claims within a request walk it in CSV order; expired leases; the blob sweep.
    assert [("requestId", 1), ("state", 1), ("row", 1), ("position", 1)] in claim_keys
    assert [("state", 1), ("leaseExpiresAt", 1)] in claim_keys
    assert [("blobKey", 1)] in claim_keys
    # Fair turns: the least recently claimed Pending request first.
    assert [("status", 1), ("claimedAt", 1)] in [i["key"] for i in before["requests"].values()]


async def test_documents_are_flat_and_keep_the_seed_names(
    store: MongoStorage, flow: Workflow, clock: FakeClock
) -> None:
    """One flat document per request, product, image, blob and delivery, with the seed's
    names; a done image names its bytes by blobKey, and identical outputs share one blob."""
    request = make_request((2, 1), webhook_url="https://hooks.example/h")
    await flow.create(request)
    first, second, third = await flow.claim("w", 3, LEASING)
    data = b"\xff\xd8\xff" + bytes(range(256))
    await flow.complete(first, result(data))
    await flow.fail(second, Failure("upstream_http_404", "gone"))
    await flow.complete(third, result(data))  # the same output as the first image
    assert await flow.finalize(request.request_id) is not None

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
    assert image["state"] == "done"
    assert image["blobKey"] == blob_key(data)
    assert "image" not in image  # the bytes are not on the image document
    for field in ("row", "position", "url", "attempts", "outputBytes"):
        assert field in image
    blob = await db.blobs.find_one({"_id": image["blobKey"]})
    assert blob is not None
    assert (blob["data"], blob["contentType"], blob["writtenAt"]) == (data, "image/jpeg", clock.now)
    shared = await db.images.find_one({"_id": third.image_id})
    assert shared is not None and shared["blobKey"] == image["blobKey"]
    assert await db.blobs.count_documents({}) == 1
    failed = await db.images.find_one({"_id": second.image_id})
    assert failed is not None
    assert (failed["failureCode"], failed.get("blobKey"), "image" in failed) == (
        "upstream_http_404",
        None,
        False,
    )
    assert await db.products.count_documents({"requestId": request.request_id}) == 2
    assert await db.images.count_documents({"requestId": request.request_id}) == 3
    [delivery] = [d async for d in db.deliveries.find({"requestId": request.request_id})]
    assert delivery["_id"] == delivery_id(request.request_id)
    for name in ("requests", "products", "images", "blobs", "deliveries", "idempotency"):
        async for doc in db.get_collection(name).find():
            for key, value in doc.items():
                assert not isinstance(value, Mapping), f"{name}.{key} is a sub-document"
                if isinstance(value, list):
                    assert all(isinstance(v, str) for v in value), f"{name}.{key} nests"


class _Replies(monitoring.CommandListener):
    """Records every command's name, collection and raw reply (pymongo command monitoring)."""

    def __init__(self) -> None:
        self.collections: dict[int, str] = {}
        self.replies: list[tuple[str, str, bytes]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        """Note which collection the command is about."""
        self.collections[event.request_id] = str(event.command.get(event.command_name))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Keep the reply."""
        collection = self.collections.pop(event.request_id, "")
        self.replies.append((event.command_name, collection, bson.encode(event.reply)))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Ignore."""
        self.collections.pop(event.request_id, None)

    def carrying(self, marker: bytes) -> list[tuple[str, str]]:
        """Return the (command, collection) of every reply that carried ``marker``."""
        return [(name, where) for name, where, reply in self.replies if marker in reply]


async def test_image_bytes_are_read_only_by_get_blob(mongodb_uri: str) -> None:
    """The bytes live in ``blobs`` alone: claims, completing (twice), retries, status reads,
    progress and finalizing never bring them back; serving the image reads them once."""
    listener = _Replies()
    client: AsyncMongoClient[Doc] = AsyncMongoClient(mongodb_uri, event_listeners=[listener])
    store = MongoStorage(mongodb_uri, client=client)
    await store.open()
    flow = Workflow.over(store, clock=FakeClock())
    marker = b"\xff\xd8MARKER" + os.urandom(64)
    request = make_request((2,))
    await flow.create(request)
    first, second = await flow.claim("w", 2, LEASING)
    await flow.complete(first, result(marker))
    await flow.renew([first, second], 60)
    await flow.retry(second, Failure("download_timeout", "slow"), 0)
    [again] = await flow.claim("w", 5, LEASING)
    await flow.complete(first, result(marker))  # the same claim again: a no-op
    await flow.complete(again, result(b"\xff\xd8"))
    records = await store.list_images(request.request_id)
    assert [r.output_bytes for r in records] == [len(marker), 2]
    assert [r.blob_key for r in records] == [blob_key(marker), blob_key(b"\xff\xd8")]
    assert (await flow.progress(request.request_id)).done == 2
    assert await flow.finalize(request.request_id) is not None
    assert await flow.unfinalized(10) == []
    assert listener.carrying(marker) == []
    assert (await flow.image(first.image_id)).data == marker
    assert listener.carrying(marker) == [("find", "blobs")]
    await store.close()
    await client.close()


async def test_oversized_output_is_refused_before_writing(
    store: MongoStorage, flow: Workflow
) -> None:
    """Bytes over MAX_IMAGE_BYTES raise ImageFailure(output_too_large) and store nothing; the
    claim still holds, so the worker can record the failure; the limit itself fits."""
    request = make_request((2,))
    await flow.create(request)
    big, fits = await flow.claim("w", 2, LEASING)
    with pytest.raises(ImageFailure) as caught:
        await flow.complete(big, result(b"\0" * (MAX_IMAGE_BYTES + 1)))
    assert caught.value.code == "output_too_large"
    assert str(MAX_IMAGE_BYTES) in caught.value.message
    assert await store.database.blobs.count_documents({}) == 0
    raw = await store.database.images.find_one({"_id": big.image_id})
    assert raw is not None
    assert (raw["state"], "blobKey" in raw, raw["leaseToken"]) == ("working", False, big.token)
    await flow.fail(big, Failure(caught.value.code, caught.value.message))
    largest = os.urandom(MAX_IMAGE_BYTES)  # exactly the limit: stored and read back whole
    await flow.complete(fits, result(largest))
    assert (await flow.image(fits.image_id)).data == largest
    images = {i.image_id: i for i in await store.list_images(request.request_id)}
    assert images[big.image_id].failure == Failure("output_too_large", caught.value.message)
    assert images[fits.image_id].output_bytes == MAX_IMAGE_BYTES


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


async def test_worker_records_an_oversized_output_as_the_image_failure(
    store: MongoStorage, flow: Workflow, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real worker on the store: output_too_large fails that image, not the worker."""
    monkeypatch.setattr(_blobs, "MAX_IMAGE_BYTES", 100)  # any real JPEG is larger
    request = make_request((1,))
    await flow.create(request)
    url = request.images[0].url
    worker = Worker(
        store,
        StaticFetcher({url: _jpeg()}),
        RecordingNotifier(),
        Urls("http://t"),
        WorkerConfig(cpu_workers=1),
        clock=clock,
    )
    assert await worker.step() == 1
    [image] = await store.list_images(request.request_id)
    assert image.state is ImageState.FAILED
    assert image.failure is not None and image.failure.code == "output_too_large"
    assert image.attempts == 1  # not retried: the same bytes would not fit either
    assert (await store.get_request(request.request_id)).status is RequestStatus.FAILED
    assert await store.database.blobs.count_documents({}) == 0


async def test_progress_counts_every_state(store: MongoStorage, flow: Workflow) -> None:
    """progress() (a $group aggregation) counts each state right on this server."""
    request = make_request((5,))
    await flow.create(request)
    done, failed, retried, working = await flow.claim("w", 4, LEASING)
    await flow.complete(done, result(b"\xff\xd8"))
    await flow.fail(failed, Failure("not_an_image", "no"))
    await flow.retry(retried, Failure("download_timeout", "slow"), 0)
    progress = await flow.progress(request.request_id)
    assert (progress.total, progress.queued, progress.working) == (5, 2, 1)
    assert (progress.done, progress.failed, progress.finished) == (1, 1, 2)
    assert await store.queue_depth() == 2
    assert working.image_id not in {c.image_id for c in await flow.claim("w", 9, LEASING)}


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
    await Workflow.over(given).create(make_request((1,)))
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
        await Workflow.over(store).claim("w", 1, LEASING)
    # pymongo leaks a socket when a client closes while its monitor is connecting (the
    # cancelled connect is never closed); after the failed selections the monitor goes
    # back to sleep within milliseconds, so let it before closing.
    await anyio.sleep(0.3)
    await store.close()
    await client.close()


async def test_image_bytes_kept_by_an_older_version_move_into_blobs(mongodb_uri: str) -> None:
    """A done image whose bytes an older version kept on the image document (``image``)
    is served after open() from a content-addressed blob, and its document loses them."""
    client: AsyncMongoClient[Doc] = AsyncMongoClient(mongodb_uri)
    try:
        db = client.get_default_database()
        await db.requests.insert_one(
            {
                "_id": "r1",
                "requestId": "r1",
                "status": "Completed",
                "columns": ["a"],
                "createdAt": 1.0,
                "updatedAt": 1.0,
                "finishedAt": 1.0,
                "totalImages": 1,
            }
        )
        await db.images.insert_one(
            {
                "_id": "i1",
                "requestId": "r1",
                "row": 2,
                "position": 0,
                "url": "https://x/a.jpg",
                "state": "done",
                "attempts": 1,
                "updatedAt": 1.0,
                "contentType": "image/jpeg",
                "image": b"\xff\xd8old bytes",
                "etag": "x",
            }
        )
    finally:
        await client.close()
    store = MongoStorage(mongodb_uri)
    await store.open()
    try:
        served = await Workflow.over(store).image("i1")
        assert served.data == b"\xff\xd8old bytes"
        doc = await store.database.images.find_one({"_id": "i1"})
        assert doc is not None and doc["image"] is None and doc["blobKey"]
        await store.open()  # nothing left to move: opening again changes nothing
    finally:
        await store.close()
