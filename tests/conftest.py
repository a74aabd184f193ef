"""Shared fixtures: the anyio backend, and the hypothesis profiles."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from imgcompress_core import Settings
from procs import ServiceProcess, running_services
from servers import MONGODB_SERVER_USED, LocalServer, running_server

pytest_plugins = ["mongo_server"]

settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


@pytest.fixture
def shared_corpus() -> Path:
    """The photo corpus beside the project (CI lays ``shared/`` next to the clone); a
    test that needs it fails, never skips, when it is missing."""
    if not any(CORPUS.glob("j*.jpg")):
        pytest.fail(f"the shared photo corpus is missing: expected JPEGs in {CORPUS}")
    return CORPUS


@pytest.fixture
def scorer() -> None:
    """The SSIMULACRA2 scorer (``imgcompress[target]``, part of the test extra); tests of
    target_quality fail, never skip, without it."""
    from imgcompress_core import _score

    if not _score.available():
        pytest.fail(
            "the scorer is missing: pip install -e '.[test]' (it brings imgcompress[target])"
        )


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
        webhook_retry_base=0.05,
        webhook_retry_max=0.2,
        cpu_workers=2,
        requests_per_second_per_host=0,  # one loopback host serves every test image
    )


@pytest.fixture
def services() -> Iterator[list[ServiceProcess]]:
    """Collect `imgcompress` subprocesses a test starts; kill any still running afterwards."""
    yield from running_services()


@pytest.fixture(params=["sqlite", "mongodb"])
def store(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """Each store the service can scale out on: (name, MongoDB URI or None)."""
    if request.param == "sqlite":
        return "sqlite", None
    return "mongodb", request.getfixturevalue("mongodb_uri")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which MongoDB server the Mongo tests used (stand-in or a real one)."""
    for line in MONGODB_SERVER_USED or ["MongoDB tests did not run in this session"]:
        terminalreporter.write_line(line)
