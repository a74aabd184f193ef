"""Storage implementations shipped with the core, and the factory that picks one.

``MemoryStorage`` keeps everything in process memory; ``SqliteStorage`` is the embedded,
durable default. Other stores (``imgcompress_mongo``) register themselves under the
``imgcompress.storage`` entry-point group, keyed by URI scheme, so the core can open them
from settings without importing them.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from ..errors import ImgCompressError
from .memory import MemoryStorage
from .sqlite import SqliteStorage

if TYPE_CHECKING:
    from ..ports import Storage
    from ..settings import Settings

__all__ = ["MemoryStorage", "SqliteStorage", "storage_from_settings"]

ENTRY_POINT_GROUP = "imgcompress.storage"


def storage_from_settings(settings: Settings) -> Storage:
    """Return the store the settings ask for: MongoDB when a URI is set, else SQLite."""
    if not settings.mongodb_uri:
        return SqliteStorage(settings.database)
    scheme = settings.mongodb_uri.split("://", 1)[0]
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == scheme:
            factory = entry.load()
            store: Storage = factory(settings)
            return store
    raise ImgCompressError(
        f"no storage adapter is installed for {scheme!r} URIs; install imgcompress[mongo]",
        code="storage_adapter_missing",
    )
