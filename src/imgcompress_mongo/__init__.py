"""imgcompress_mongo: the core's Storage protocol on MongoDB (pymongo's AsyncMongoClient).

``imgcompress serve`` and ``imgcompress worker`` use it when ``IMGCOMPRESS_MONGODB_URI`` is
set: the core finds :func:`create_storage` through the ``imgcompress.storage`` entry
point, by URI scheme (``mongodb`` and ``mongodb+srv``). Embedders can build
:class:`MongoStorage` directly. The design (flat documents, one-at-a-time atomic claims,
exactly-once finalize, the 15 MiB image limit) is described in :mod:`.storage`.
"""

from __future__ import annotations

from .storage import MAX_IMAGE_BYTES, MongoStorage, create_storage

__all__ = ["MAX_IMAGE_BYTES", "MongoStorage", "create_storage"]
