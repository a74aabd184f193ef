"""The blob contract suite, and what S3 adds to it, on moto's S3 server (or a real bucket)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from s3_server import Bucket

from imgcompress_core.blobs import blobs_from_settings
from imgcompress_core.errors import BlobNotFound
from imgcompress_core.ports import BlobStore
from imgcompress_core.settings import Settings
from imgcompress_core.testing import BlobContract
from imgcompress_core.workflow import blob_key
from imgcompress_s3 import CACHE_CONTROL, S3BlobStore

pytestmark = pytest.mark.anyio


class TestS3BlobContract(BlobContract):
    """S3BlobStore passes the contract every blob store passes."""

    @pytest.fixture
    async def blobs(self, s3_bucket: Bucket) -> AsyncIterator[BlobStore]:
        store = S3BlobStore.from_url(s3_bucket.url)
        await store.open()
        yield store
        await store.close()


async def test_objects_are_content_addressed_with_type_and_caching(s3_bucket: Bucket) -> None:
    """An object sits at <prefix>/<sha256> with its content type and immutable caching."""
    store = S3BlobStore.from_url(s3_bucket.url)
    data = b"\xff\xd8 a jpeg"
    key = blob_key(data)
    await store.put_blob(key, data, "image/jpeg", 1_700_000_000.0)
    assert s3_bucket.object_keys() == [f"{s3_bucket.prefix}/{key}"]
    head = s3_bucket.head(key)
    assert head["ContentType"] == "image/jpeg"
    assert head["CacheControl"] == CACHE_CONTROL


async def test_settings_select_the_s3_store(s3_bucket: Bucket) -> None:
    """IMGCOMPRESS_BLOB_URL=s3://... opens the S3 store through its entry point."""
    store = blobs_from_settings(Settings(blob_url=s3_bucket.url))
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix) == (s3_bucket.name, s3_bucket.prefix)
    await store.ping()


async def test_presigned_link_serves_the_bytes(s3_bucket: Bucket) -> None:
    """A presigned URL fetches the object without credentials, with its headers."""
    store = S3BlobStore.from_url(s3_bucket.url)
    data = b"RIFF....WEBPVP8 "
    key = blob_key(data)
    await store.put_blob(key, data, "image/webp", 1_700_000_000.0)
    url = await store.presigned_url(key, 60)
    async with httpx.AsyncClient() as client:
        answer = await client.get(url)
    assert answer.status_code == 200
    assert answer.content == data
    assert answer.headers["content-type"] == "image/webp"
    assert answer.headers["cache-control"] == CACHE_CONTROL


async def test_listing_by_last_modified_on_the_wall_clock(s3_bucket: Bucket) -> None:
    """With a real clock the sweep lists by Last-Modified: old enough, or not yet."""
    import time

    store = S3BlobStore.from_url(s3_bucket.url)
    data = b"written now"
    key = blob_key(data)
    await store.put_blob(key, data, "image/jpeg", time.time())
    assert await store.blobs_written_before(time.time() - 60, "", 10) == []
    assert await store.blobs_written_before(time.time() + 60, "", 10) == [key]
    await store.delete_blobs([key], time.time() - 60)  # written after the cutoff: spared
    assert (await store.get_blob(key)).data == data
    await store.delete_blobs([key], time.time() + 60)
    with pytest.raises(BlobNotFound):
        await store.get_blob(key)


async def test_foreign_objects_under_the_prefix_are_left_alone(s3_bucket: Bucket) -> None:
    """Objects whose names are not blob keys are never listed for the sweep."""
    store = S3BlobStore.from_url(s3_bucket.url)
    import obstore

    await obstore.put_async(store._store, "README.txt", b"not ours")
    key = blob_key(b"ours")
    await store.put_blob(key, b"ours", "image/png", 1_700_000_000.0)
    assert await store.blobs_written_before(1_800_000_000.0, "", 10) == [key]


@pytest.mark.parametrize(
    "url",
    [
        "s3:///no-bucket",
        "https://bucket/prefix",
        "s3://bucket/prefix?endpoint=http://x&colour=blue",
    ],
)
def test_bad_urls_are_refused_by_name(url: str) -> None:
    """A malformed IMGCOMPRESS_BLOB_URL fails at start-up, saying what is wrong."""
    with pytest.raises(ValueError, match=r"S3 blob URL|unknown parameter"):
        S3BlobStore.from_url(url)
