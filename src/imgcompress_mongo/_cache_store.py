"""MongoStorage's blobs (``blobs``: one document per content-addressed blob) and reuse
cache (``sources`` and ``outputs``), as a base class of the store."""

from __future__ import annotations

from collections.abc import Sequence

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from imgcompress_core.model import Blob, Output, Source

from . import _blobs, _cache
from ._documents import Doc, to_output
from ._errors import translated

__all__ = ["MongoBlobsAndCache"]


class MongoBlobsAndCache:
    """The blob and reuse-cache ports on the store's database."""

    def _database(self) -> AsyncDatabase[Doc]:
        raise NotImplementedError  # the store provides its open database

    def _col(self, name: str) -> AsyncCollection[Doc]:
        return self._database().get_collection(name)

    # -- the reuse cache --------------------------------------------------------------

    async def get_source(self, owner: str, url: str) -> Source | None:
        """Return the last download of ``url`` for ``owner``."""
        async with translated("reading a source"):
            return await _cache.get_source(self._database(), owner, url)

    async def recall(
        self, owner: str, url: str, policy: str, now: float
    ) -> tuple[Source | None, Output | None]:
        """Return the URL's last download and its output under ``policy``."""
        source = await self.get_source(owner, url)
        if source is None:
            return None, None
        return source, await self.find_output(owner, policy, source.input_hash, now)

    async def put_source(self, source: Source) -> None:
        """Record (or replace) the last download of a URL."""
        async with translated("recording a source"):
            await _cache.put_source(self._database(), source)

    async def find_output(
        self, owner: str, policy: str, input_hash: str, now: float
    ) -> Output | None:
        """Return the output of this input, marking it used."""
        async with translated("looking up an output"):
            return await _cache.find_output(self._database(), owner, policy, input_hash, now)

    async def get_output(self, output_id: str) -> Output | None:
        """Return an output by id."""
        async with translated("reading an output"):
            doc = await self._col("outputs").find_one({"_id": output_id})
        return None if doc is None else to_output(doc)

    async def output_in_use(self, output_id: str) -> bool:
        """Return True if some image references this output."""
        async with translated("checking an output"):
            found = await self._col("images").find_one(
                {"outputId": output_id}, projection={"_id": 1}
            )
        return found is not None

    async def add_output(self, output: Output) -> Output:
        """Keep the output unless its input already has one; return the one kept."""
        async with translated("storing an output"):
            return await _cache.add_output(self._database(), output)

    async def delete_unreferenced_outputs(self, used_before: float, limit: int) -> int:
        """Delete outputs unused since ``used_before`` that no image references."""
        async with translated("sweeping outputs"):
            return await _cache.delete_unreferenced(self._database(), used_before, limit)

    # -- blobs ------------------------------------------------------------------------

    async def put_blob(self, key: str, data: bytes, content_type: str, now: float) -> None:
        """Store the bytes under ``key`` (one copy); ``output_too_large`` over 15 MiB."""
        async with translated("writing a blob"):
            await _blobs.put(self._col("blobs"), key, data, content_type, now)

    async def get_blob(self, key: str) -> Blob:
        """Return a blob or raise BlobNotFound."""
        async with translated("reading a blob"):
            return await _blobs.get(self._col("blobs"), key)

    async def blobs_written_before(self, cutoff: float, after: str, limit: int) -> list[str]:
        """Return keys after ``after`` of blobs written before ``cutoff``, in key order."""
        async with translated("listing blobs"):
            return await _blobs.written_before(self._col("blobs"), cutoff, after, limit)

    async def delete_blobs(self, keys: Sequence[str], written_before: float) -> None:
        """Delete these blobs unless written again since ``written_before``."""
        async with translated("deleting blobs"):
            await _blobs.delete(self._col("blobs"), keys, written_before)
