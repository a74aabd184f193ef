"""imgcompress_s3: the processed images in an S3-compatible bucket (``imgcompress[s3]``).

``S3BlobStore`` plays the core's ``BlobStore`` role; ``IMGCOMPRESS_BLOB_URL=s3://...``
selects it through the ``imgcompress.blobs`` entry point, or pass one yourself::

    blobs = S3BlobStore.from_url("s3://images/prod?endpoint=http://127.0.0.1:9000")
    async with Imgcompress(settings, blobs=blobs) as ic:
        ...

It depends on the core and on obstore, never on the other adapters.
"""

from __future__ import annotations

from .store import CACHE_CONTROL, S3BlobStore, create_blob_store

__all__ = ["CACHE_CONTROL", "S3BlobStore", "create_blob_store"]
