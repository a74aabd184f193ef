"""The blob-store contract suite: what every BlobStore must do, as pytest tests.

Use it for a blob store of your own (object storage, a directory)::

    class TestMyBlobs(BlobContract):
        @pytest.fixture
        async def blobs(self):
            store = MyBlobs(...)
            await store.open()
            yield store
            await store.close()

Stores that play every role get these tests through :class:`StorageContract`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from ..errors import BlobNotFound
from ..ports import BlobStore
from ..workflow import blob_key

__all__ = ["BlobContract"]

T0 = 1_700_000_000.0


async def put(blobs: BlobStore, data: bytes, now: float = T0, kind: str = "image/jpeg") -> str:
    """Store ``data`` under its content key and return the key."""
    key = blob_key(data)
    await blobs.put_blob(key, data, kind, now)
    return key


@pytest.mark.anyio
class BlobContract:
    """Every BlobStore must pass these tests; subclass and provide a ``blobs`` fixture."""

    @pytest.fixture
    def blobs(self) -> AsyncIterator[BlobStore]:
        """Provide an opened, empty blob store (override this)."""
        raise NotImplementedError("subclasses provide the blobs fixture")

    async def test_blob_reads_back(self, blobs: BlobStore) -> None:
        """Bytes and content type read back byte for byte; unknown keys raise BlobNotFound."""
        data = bytes(range(256)) * 64
        key = await put(blobs, data, kind="image/webp")
        blob = await blobs.get_blob(key)
        assert (blob.key, blob.data, blob.content_type) == (key, data, "image/webp")
        with pytest.raises(BlobNotFound):
            await blobs.get_blob(blob_key(b"never written"))

    async def test_same_bytes_keep_one_copy(self, blobs: BlobStore) -> None:
        """Writing the same bytes again (another image, a retry) keeps one blob."""
        first = await put(blobs, b"same bytes", T0)
        second = await put(blobs, b"same bytes", T0 + 5)
        assert first == second
        assert await blobs.blobs_written_before(T0 + 100, "", 10) == [first]

    async def test_listing_pages_in_key_order_by_age(self, blobs: BlobStore) -> None:
        """Old blobs are listed in key order, page by page; newer ones are not."""
        old = sorted([await put(blobs, f"old {n}".encode(), T0) for n in range(5)])
        await put(blobs, b"new", T0 + 100)
        page = await blobs.blobs_written_before(T0 + 50, "", 3)
        assert page == old[:3]
        assert await blobs.blobs_written_before(T0 + 50, page[-1], 3) == old[3:]

    async def test_delete_spares_blobs_written_again(self, blobs: BlobStore) -> None:
        """A delete skips a blob written again since the cutoff (a worker reused it)."""
        gone = await put(blobs, b"unused", T0)
        kept = await put(blobs, b"reused", T0)
        await put(blobs, b"reused", T0 + 100)  # written again after the sweep looked
        await blobs.delete_blobs([gone, kept], T0 + 50)
        with pytest.raises(BlobNotFound):
            await blobs.get_blob(gone)
        assert (await blobs.get_blob(kept)).data == b"reused"

    async def test_concurrent_writes_of_one_blob(self, blobs: BlobStore) -> None:
        """Many workers writing the same bytes at once leave one readable blob."""
        data = b"\xff\xd8" + b"x" * 10_000

        async with anyio.create_task_group() as tasks:
            for n in range(8):
                tasks.start_soon(put, blobs, data, T0 + n)
        assert (await blobs.get_blob(blob_key(data))).data == data
