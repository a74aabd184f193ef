"""A real MongoDB wire-protocol server for the tests (loaded as a pytest plugin).

By default the `nx-27017` stand-in (MongoDB's wire protocol over SQLite) is started on
a free loopback port for the session. Set IMGCOMPRESS_TEST_MONGODB_URI to run the same
tests against a real MongoDB instead. Which one was used is printed at the end of the
run. If the server cannot start the tests fail: they never skip.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from servers import MONGODB_SERVER_USED as SERVER_USED


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_stand_in(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start nx-27017 on a free port; return the process and its URI (fails loudly)."""
    port = _free_port()
    exe = Path(sys.executable).with_name("nx-27017")
    log = data_dir / "nx-27017.log"
    # Its output goes to a file: a pipe nobody reads fills up and freezes the server.
    output = (data_dir / "nx-27017.out").open("wb")
    process = subprocess.Popen(
        [
            str(exe),
            "--data-dir",
            str(data_dir / "data"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-file",
            str(log),
            "--pid-file",
            str(data_dir / "nx.pid"),
        ],
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    output.close()
    uri = f"mongodb://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = (data_dir / "nx-27017.out").read_text(errors="replace")
            pytest.fail(f"nx-27017 exited with {process.returncode}:\n{err}")
        # Wait for the port with a plain socket: a driver that fails to connect can leave
        # its socket to the garbage collector, which pytest (rightly) reports.
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail(f"nx-27017 did not listen on {uri} within 30 s")
    try:
        with MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
            client.admin.command("ping")
    except PyMongoError as exc:
        process.kill()
        pytest.fail(f"nx-27017 on {uri} does not answer ping: {exc}")
    return process, uri


@pytest.fixture(scope="session")
def mongodb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URI of a MongoDB server: IMGCOMPRESS_TEST_MONGODB_URI, or a fresh stand-in."""
    configured = os.environ.get("IMGCOMPRESS_TEST_MONGODB_URI")
    if configured:
        SERVER_USED.append(f"MongoDB tests ran against IMGCOMPRESS_TEST_MONGODB_URI={configured}")
        yield configured.rstrip("/")
        return
    process, uri = start_stand_in(tmp_path_factory.mktemp("nx-27017"))
    SERVER_USED.append(f"MongoDB tests ran against the nx-27017 stand-in at {uri}")
    try:
        yield uri
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def mongodb_uri(mongodb_server: str) -> str:
    """A URI naming a fresh database, so tests never see each other's documents."""
    base = mongodb_server.split("?", 1)[0].rstrip("/")
    if base.count("/") > 2:  # a URI that already names a database: replace it
        base = base.rsplit("/", 1)[0]
    return f"{base}/t{uuid.uuid4().hex[:12]}"
