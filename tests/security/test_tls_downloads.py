"""Downloads over TLS through the guard: a real HTTPS server on loopback.

The guard wraps every connection's stream (it reads 256 KiB at a time instead of
httpcore's 64 KiB); over HTTPS the stream is upgraded by ``start_tls``, and the upgraded
stream must carry whole bodies of any size, on fresh and on reused connections.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imgcompress_core.errors import FetchError
from imgcompress_core.fetch import FetchOptions, HttpxFetcher

BODIES = {"/small": os.urandom(1000), "/large": os.urandom(3 * 1024 * 1024 + 17)}


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key; return (cert, key) files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imgcompress test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path, list[int]]]:
    """An HTTPS keep-alive server on loopback; yields its base URL, its certificate and
    the client ports it saw (one per connection)."""
    cert, key = _self_signed(tmp_path)
    ports: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            ports.append(self.client_address[1])
            body = BODIES[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert, ports
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.anyio
async def test_https_bodies_arrive_whole_on_fresh_and_reused_connections(
    https_server: tuple[str, Path, list[int]],
) -> None:
    base, cert, ports = https_server
    options = FetchOptions(allow_private_networks=True, requests_per_second_per_host=0)
    fetcher = HttpxFetcher(options, ssl_context=ssl.create_default_context(cafile=str(cert)))
    try:
        for path in ("/large", "/small", "/large", "/large"):
            fetched = await fetcher.fetch(base + path)
            assert fetched.data == BODIES[path]
    finally:
        await fetcher.aclose()
    assert len(ports) == 4
    assert len(set(ports)) == 1  # one connection, kept alive: the reads left nothing behind


@pytest.mark.anyio
async def test_https_refuses_a_certificate_it_does_not_trust(
    https_server: tuple[str, Path, list[int]],
) -> None:
    base, _, _ = https_server
    options = FetchOptions(allow_private_networks=True, requests_per_second_per_host=0)
    fetcher = HttpxFetcher(options)  # the system's trust store: our certificate is not in it
    try:
        with pytest.raises(FetchError) as caught:
            await fetcher.fetch(base + "/small")
    finally:
        await fetcher.aclose()
    assert caught.value.code == "connection_failed"
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
