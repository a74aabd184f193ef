"""An S3 wire-protocol server for the blob tests: moto's server mode, or a real bucket.

By default moto (``ThreadedMotoServer``) is started on a free loopback port for the
session and every test gets a bucket of its own. Set ``IMGCOMPRESS_TEST_S3_URL`` (for
example ``s3://my-bucket/imgcompress-ci?region=eu-west-1``, credentials in the usual
``AWS_*`` variables) to run the same tests against a real bucket: each test then works
under a fresh prefix below the one given, and removes what it wrote. Which server was
used is printed at the end of the run. If the stand-in cannot start, the tests fail:
they never skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from s3_server import S3_SERVER_USED, Bucket, MotoServer, make_bucket, remove_objects


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer | str]:
    """The session's S3: IMGCOMPRESS_TEST_S3_URL (a string), or a running moto server."""
    configured = os.environ.get("IMGCOMPRESS_TEST_S3_URL")
    if configured:
        S3_SERVER_USED.append(f"S3 tests ran against IMGCOMPRESS_TEST_S3_URL={configured}")
        yield configured
        return
    try:
        server = MotoServer().start()
    except Exception as exc:  # never skip: a missing stand-in is a failure
        pytest.fail(f"moto's S3 server did not start: {exc!r}")
    S3_SERVER_USED.append(f"S3 tests ran against moto's S3 server at {server.endpoint}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: MotoServer | str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bucket]:
    """A fresh, empty place for this test's blobs (AWS_* set for the stand-in)."""
    bucket = make_bucket(s3_server, timeout="5", retry_seconds="2")
    for name, value in bucket.env.items():
        monkeypatch.setenv(name, value)
    try:
        yield bucket
    finally:
        remove_objects(bucket)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which S3 server the blob tests used (the stand-in or a real bucket)."""
    for line in S3_SERVER_USED or ["S3 tests did not run in this session"]:
        terminalreporter.write_line(line)
