"""imgcompress_mongo: the core's Storage protocol on MongoDB (pymongo's AsyncMongoClient).

``imgcompress serve`` and ``imgcompress worker`` use it when ``IMGCOMPRESS_MONGODB_URI`` is
set: the core finds it through the ``imgcompress.storage`` entry point, by URI scheme.
"""

from __future__ import annotations

from .storage import MAX_IMAGE_BYTES, MongoStorage, create_storage

__all__ = ["MAX_IMAGE_BYTES", "MongoStorage", "create_storage"]
