"""Fixtures for the security battery: canary listeners on loopback, a TLS certificate."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

import pytest
from security_kit import Canaries, Certificate, RawServer, ipv6_loopback_available


@pytest.fixture
def canaries() -> Iterator[Canaries]:
    """Record every connection to loopback on the canary port; each answers 200 if reached."""
    first = RawServer(host="127.0.0.1")
    servers = [first]
    hosts = ["127.0.0.2", "127.0.0.3"] + (["::1"] if ipv6_loopback_available() else [])
    for host in hosts:
        with contextlib.suppress(OSError):  # the port may be taken on that address
            servers.append(RawServer(host=host, port=first.port))
    try:
        yield Canaries(first.port, servers)
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A certificate for images.example, made with the openssl command line."""
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    try:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-subj",
                "/CN=images.example",
                "-addext",
                "subjectAltName=DNS:images.example",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"openssl cannot make a test certificate (install openssl): {exc}")
    return Certificate("images.example", cert, key)
