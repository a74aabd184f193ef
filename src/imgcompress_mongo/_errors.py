"""Translate pymongo's errors into the core's at the adapter's edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pymongo.errors import ConnectionFailure, PyMongoError

from imgcompress_core.errors import StorageError, StorageUnavailable

__all__ = ["translated"]


@asynccontextmanager
async def translated(action: str) -> AsyncIterator[None]:
    """Raise StorageUnavailable for connection trouble, StorageError for other driver errors."""
    try:
        yield
    except ConnectionFailure as exc:
        raise StorageUnavailable(f"MongoDB is unreachable while {action}: {exc}") from exc
    except PyMongoError as exc:
        raise StorageError(f"MongoDB failed while {action}: {exc}") from exc
