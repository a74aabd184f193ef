"""Blob stores kept apart from the database, and the factory that picks one from settings.

The processed bytes live in the database by default (every ``Storage`` also plays the
``BlobStore`` role). ``IMGCOMPRESS_BLOB_URL`` moves them elsewhere:

- ``file:///srv/imgcompress/blobs``: :class:`FileBlobStore`, a plain directory (stdlib
  only, so it lives in the core);
- ``s3://bucket/prefix?endpoint=...&region=...``: ``imgcompress_s3.S3BlobStore``
  (``pip install imgcompress[s3]``), found through the ``imgcompress.blobs`` entry-point
  group keyed by URL scheme, so the core never imports it.

Two optional abilities a blob store may have, matched by shape like the ports:
:class:`PresignsUrls` (hand out a time-limited link to the bytes, so ``/api/images/{id}``
can redirect instead of streaming) and :class:`PublicPaths` (where a key's bytes sit
under a public base URL, when that is not simply ``<base>/<key>``).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from ..errors import ImgCompressError
from .files import FileBlobStore

if TYPE_CHECKING:
    from ..ports import BlobStore
    from ..settings import Settings

__all__ = [
    "ENTRY_POINT_GROUP",
    "FileBlobStore",
    "PresignsUrls",
    "PublicPaths",
    "blobs_from_settings",
    "public_path",
]

ENTRY_POINT_GROUP = "imgcompress.blobs"


@runtime_checkable
class PresignsUrls(Protocol):
    """A blob store that can hand out a time-limited URL to a blob (object storage)."""

    async def presigned_url(self, key: str, seconds: float) -> str:
        """Return a URL that serves ``key``'s bytes for ``seconds`` without credentials."""
        ...


@runtime_checkable
class PublicPaths(Protocol):
    """A blob store whose blobs sit under a public base URL at a path other than the key."""

    def public_path(self, key: str, content_type: str | None) -> str:
        """Return the path of ``key``'s bytes below the public base URL (no leading /)."""
        ...


def public_path(blobs: object, key: str, content_type: str | None) -> str:
    """Return where ``key`` sits below a public base URL for this blob store."""
    if isinstance(blobs, PublicPaths):
        return blobs.public_path(key, content_type)
    return key


def blobs_from_settings(settings: Settings) -> BlobStore | None:
    """Return the blob store ``blob_url`` asks for, or None (the bytes stay in the database)."""
    url = settings.blob_url
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise ValueError(f"a file blob URL is file:///absolute/directory, not {url!r}")
        return FileBlobStore(unquote(parts.path))
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == parts.scheme:
            factory = entry.load()
            store: BlobStore = factory(settings)
            return store
    raise ImgCompressError(
        f"no blob store adapter is installed for {parts.scheme!r} URLs"
        f" (IMGCOMPRESS_BLOB_URL); for s3:// install imgcompress[s3]",
        code="storage_adapter_missing",
    )
