"""Shared fixtures: the anyio backend, and the hypothesis profiles."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from imgcompress_core import Settings
from procs import Service, running_services
from servers import LocalServer, running_server

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (the backend uvicorn and Litestar use)."""
    return "asyncio"


@pytest.fixture
def image_server() -> Iterator[LocalServer]:
    """A real HTTP server on loopback that serves whatever a test registers."""
    yield from running_server()


@pytest.fixture
def webhook_receiver() -> Iterator[LocalServer]:
    """A real HTTP server on loopback that records webhook POSTs (answers 200 by default)."""
    server = LocalServer().start()
    server.add("/hook", b"ok", content_type="text/plain")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    """Settings for tests: a fresh SQLite file, loopback allowed, fast polling and retries."""
    return Settings(
        database=tmp_path / "imgcompress.sqlite3",
        allow_private_networks=True,
        poll_interval=0.05,
        retry_base_delay=0.05,
        retry_max_delay=0.2,
        cpu_workers=2,
    )


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Collect `imgcompress` subprocesses a test starts; kill any still running afterwards."""
    yield from running_services()
