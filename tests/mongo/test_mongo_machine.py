"""The model test on MongoDB (the stand-in, or a real server), one database per example."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from imgcompress_core import Storage
from imgcompress_core.testing import store_machine
from imgcompress_mongo import MongoStorage


@pytest.fixture
def mongo_machine(mongodb_server: str) -> type[Any]:
    """The model test class bound to this session's MongoDB server."""
    base = mongodb_server.split("?", 1)[0].rstrip("/")
    if base.count("/") > 2:
        base = base.rsplit("/", 1)[0]

    @asynccontextmanager
    async def open_store() -> AsyncIterator[Storage]:
        store = MongoStorage(f"{base}/m{uuid.uuid4().hex[:12]}")
        await store.open()
        try:
            yield store
        finally:
            await store.database.client.drop_database(store.database_name)
            await store.close()

    return store_machine(open_store, max_examples=30, steps=25)


def test_mongo_store_machine(mongo_machine: type[Any]) -> None:
    """MongoStorage keeps every rule under random event sequences."""
    mongo_machine("runTest").runTest()
