"""The storage contract suite, run against the stores the core ships."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imgcompress_core import MemoryStorage, SqliteStorage, Storage
from imgcompress_core.testing import StorageContract


class TestMemoryStorage(StorageContract):
    """The in-memory store is a real product feature: it passes the same contract."""

    @pytest.fixture
    async def storage(self) -> AsyncIterator[Storage]:
        store = MemoryStorage()
        await store.open()
        yield store
        await store.close()


class TestSqliteStorage(StorageContract):
    """The embedded default, on a real SQLite file."""

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[Storage]:
        store = SqliteStorage(tmp_path / "contract.sqlite3")
        await store.open()
        yield store
        await store.close()
