"""The storage contract suite on MongoDB, used exactly as an outside adapter would use it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from imgcompress_core.testing import StorageContract
from imgcompress_mongo import MongoStorage


class TestMongoStorage(StorageContract):
    """MongoStorage passes the same contract as the memory and SQLite stores."""

    @pytest.fixture
    async def storage(self, mongodb_uri: str) -> AsyncIterator[MongoStorage]:
        store = MongoStorage(mongodb_uri)
        await store.open()
        yield store
        await store.close()
