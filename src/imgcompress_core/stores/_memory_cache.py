"""The in-memory store's blobs and reuse cache (content-addressed bytes, outputs, sources)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..errors import BlobNotFound
from ..model import Blob, ImageRecord, Output, Source

__all__ = ["MemoryBlobsAndCache"]


@dataclasses.dataclass(slots=True)
class _Stored:
    data: bytes
    content_type: str
    written_at: float


class MemoryBlobsAndCache:
    """Blobs and the reuse cache in dicts; the images they are checked against belong to
    the store that builds on this."""

    _images: dict[str, ImageRecord]

    def __init__(self) -> None:
        self._blobs: dict[str, _Stored] = {}
        self._sources: dict[tuple[str, str], Source] = {}  # (owner, url) -> last download
        self._outputs: dict[tuple[str, str, str], Output] = {}  # (owner, policy, input hash)
        self._output_ids: dict[str, tuple[str, str, str]] = {}

    # -- the reuse cache --------------------------------------------------------------

    async def get_source(self, owner: str, url: str) -> Source | None:
        """Return the last download of ``url`` for ``owner``."""
        return self._sources.get((owner, url))

    async def recall(
        self, owner: str, url: str, policy: str, now: float
    ) -> tuple[Source | None, Output | None]:
        """Return the URL's last download and its output under ``policy``."""
        source = await self.get_source(owner, url)
        if source is None:
            return None, None
        return source, await self.find_output(owner, policy, source.input_hash, now)

    async def put_source(self, source: Source) -> None:
        """Record the last download of a URL."""
        self._sources[(source.owner, source.url)] = source

    async def find_output(
        self, owner: str, policy: str, input_hash: str, now: float
    ) -> Output | None:
        """Return the output of this input, marking it used."""
        key = (owner, policy, input_hash)
        output = self._outputs.get(key)
        if output is not None:
            output = self._outputs[key] = dataclasses.replace(output, last_used_at=now)
        return output

    async def get_output(self, output_id: str) -> Output | None:
        """Return an output by id."""
        key = self._output_ids.get(output_id)
        return None if key is None else self._outputs[key]

    async def output_in_use(self, output_id: str) -> bool:
        """Return True if some image references this output."""
        return any(i.output_id == output_id for i in self._images.values())

    async def add_output(self, output: Output) -> Output:
        """Keep the output unless its input already has one; return the one kept."""
        key = (output.owner, output.policy, output.input_hash)
        kept = self._outputs.setdefault(key, output)
        self._output_ids[kept.output_id] = key
        return kept

    async def delete_unreferenced_outputs(self, used_before: float, limit: int) -> int:
        """Delete outputs unused since ``used_before`` that no image references."""
        used = {i.output_id for i in self._images.values() if i.output_id}
        gone = [
            key
            for key, output in self._outputs.items()
            if output.last_used_at < used_before and output.output_id not in used
        ][:limit]
        for key in gone:
            del self._output_ids[self._outputs.pop(key).output_id]
        hashes = {(o.owner, o.input_hash) for o in self._outputs.values()}
        for source_key, source in list(self._sources.items()):
            if (source.owner, source.input_hash) not in hashes:
                del self._sources[source_key]
        return len(gone)

    # -- blobs ------------------------------------------------------------------------

    async def put_blob(self, key: str, data: bytes, content_type: str, now: float) -> None:
        """Keep the bytes under ``key`` (one copy), stamped ``now``."""
        stored = self._blobs.get(key)
        if stored is None:
            self._blobs[key] = _Stored(data, content_type, now)
        else:
            stored.written_at = now

    async def get_blob(self, key: str) -> Blob:
        """Return a blob or raise BlobNotFound."""
        stored = self._blobs.get(key)
        if stored is None:
            raise BlobNotFound(key)
        return Blob(key, stored.data, stored.content_type)

    async def blobs_written_before(self, cutoff: float, after: str, limit: int) -> list[str]:
        """Return keys after ``after`` of blobs written before ``cutoff``, in key order."""
        keys = sorted(k for k, b in self._blobs.items() if k > after and b.written_at < cutoff)
        return keys[:limit]

    async def delete_blobs(self, keys: Sequence[str], written_before: float) -> None:
        """Delete these blobs unless written again since ``written_before``."""
        for key in keys:
            stored = self._blobs.get(key)
            if stored is not None and stored.written_at < written_before:
                del self._blobs[key]
