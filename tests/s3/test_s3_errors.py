"""A bucket that fails (5xx, access denied, missing, slow, down) gives the core's errors:
a retryable blob_store_unavailable for a write, StorageUnavailable for everything else,
each naming the bucket and the reason."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from s3_server import FaultyS3, free_port

from imgcompress_core.errors import ImageFailure, StorageUnavailable
from imgcompress_core.workflow import blob_key
from imgcompress_s3 import S3BlobStore

pytestmark = pytest.mark.anyio

KEY = blob_key(b"x")
CREDENTIALS = {"access_key_id": "test", "secret_access_key": "test"}


@pytest.fixture
def faulty() -> Iterator[FaultyS3]:
    server = FaultyS3()
    yield server
    server.close()


def store_at(endpoint: str, **options: float) -> S3BlobStore:
    return S3BlobStore(
        "imgbucket",
        "blobs",
        endpoint=endpoint,
        region="us-east-1",
        config=CREDENTIALS,
        **{"timeout": 2.0, "retry_seconds": 0.2, "ping_seconds": 3.0, **options},
    )


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (503, "SlowDown", "503"),
        (500, "InternalError", "500"),
        (403, "AccessDenied", "access denied"),
        (404, "NoSuchBucket", "the bucket does not exist"),
    ],
)
async def test_a_failing_bucket_is_a_retryable_image_failure(
    faulty: FaultyS3, status: int, code: str, reason: str
) -> None:
    """put_blob: retryable blob_store_unavailable; reads, listing, deletes and ping:
    StorageUnavailable; every message names the bucket and why."""
    faulty.status, faulty.code = status, code
    store = store_at(faulty.endpoint)
    with pytest.raises(ImageFailure) as failure:
        await store.put_blob(KEY, b"x", "image/jpeg", time.time())
    assert failure.value.code == "blob_store_unavailable"
    assert failure.value.retryable
    assert "s3://imgbucket/blobs" in failure.value.message
    assert reason in failure.value.message
    calls = [
        lambda: store.get_blob(KEY),
        lambda: store.blobs_written_before(time.time(), "", 10),
        store.ping,
    ]
    if status != 404:  # a HEAD's 404 has no body: a missing bucket reads as a missing key
        calls.append(lambda: store.delete_blobs([KEY], time.time()))
    for call in calls:
        with pytest.raises(StorageUnavailable) as unavailable:
            await call()
        assert "s3://imgbucket/blobs" in unavailable.value.message
        assert unavailable.value.retryable
    if status == 404:
        await store.delete_blobs([KEY], time.time())  # nothing there to delete: no error


async def test_5xx_answers_are_retried_inside_one_call(faulty: FaultyS3) -> None:
    """The client retries 5xx answers with backoff before giving up (a blip never reaches
    the image)."""
    store = store_at(faulty.endpoint, retry_seconds=1.0)
    with pytest.raises(ImageFailure):
        await store.put_blob(KEY, b"x", "image/jpeg", time.time())
    assert faulty.requests >= 2


async def test_a_slow_bucket_times_out(faulty: FaultyS3) -> None:
    """A bucket that does not answer fails the call after the request timeout, it does not
    hold the image for ever; ping gives up after ping_seconds."""
    faulty.hang = 3.0
    store = store_at(faulty.endpoint, timeout=0.5, retry_seconds=0.2, ping_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(ImageFailure) as failure:
        await store.put_blob(KEY, b"x", "image/jpeg", time.time())
    assert failure.value.code == "blob_store_unavailable"
    with pytest.raises(StorageUnavailable):
        await store.ping()
    assert time.monotonic() - started < 8


async def test_a_bucket_that_is_down(faulty: FaultyS3) -> None:
    """Nothing listening: connection refused is unavailable too."""
    store = store_at(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ImageFailure) as failure:
        await store.put_blob(KEY, b"x", "image/jpeg", time.time())
    assert failure.value.retryable
    with pytest.raises(StorageUnavailable):
        await store.get_blob(KEY)
