"""Helpers for the S3 tests: moto's server on a fixed port, and one test's bucket.

The fixtures that use them, and how to point the tests at a real bucket, are in this
folder's conftest.py.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import boto3
from moto.server import ThreadedMotoServer

S3_SERVER_USED: list[str] = []
REGION = "us-east-1"

# Credentials the stand-in accepts (it checks none); a real bucket uses the environment's.
MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "imgcompress-test",
    "AWS_SECRET_ACCESS_KEY": "imgcompress-test-secret",
    "AWS_REGION": REGION,
}


def free_port() -> int:
    """Return a free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MotoServer:
    """moto's S3 server on a fixed loopback port that a test may stop and start again (its
    buckets and objects live in this process, so they survive a restart)."""

    port: int = field(default_factory=free_port)
    server: ThreadedMotoServer | None = None

    @property
    def endpoint(self) -> str:
        """Return http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        """Start answering (again) on the same port."""
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop answering: connections are refused until start()."""
        if self.server is not None:
            self.server.stop()
            self.server = None

    def client(self) -> object:
        """Return a boto3 S3 client for the server (to create and inspect buckets)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )


@dataclass(frozen=True)
class Bucket:
    """Where one test keeps blobs: a URL for IMGCOMPRESS_BLOB_URL, and how to reach it."""

    url: str  # s3://bucket/prefix?endpoint=...&region=...
    name: str
    prefix: str
    endpoint: str | None
    env: dict[str, str]  # AWS_* variables a process needs to use it

    def object_keys(self) -> list[str]:
        """Return every object key under the prefix (read with boto3, not our code)."""
        client = _boto(self)
        found: list[str] = []
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=f"{self.prefix}/"
        )
        for page in pages:
            found += [item["Key"] for item in page.get("Contents", [])]
        return found

    def head(self, key: str) -> dict[str, object]:
        """Return boto3's head_object answer for a key below the prefix."""
        return _boto(self).head_object(Bucket=self.name, Key=f"{self.prefix}/{key}")  # type: ignore[no-any-return]


def _boto(bucket: Bucket) -> object:
    kwargs: dict[str, str] = {}
    if bucket.endpoint:
        kwargs["endpoint_url"] = bucket.endpoint
    if bucket.env:
        kwargs.update(
            aws_access_key_id=bucket.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=bucket.env["AWS_SECRET_ACCESS_KEY"],
            region_name=bucket.env["AWS_REGION"],
        )
    return boto3.client("s3", **kwargs)


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    query.update(params)
    return parts._replace(query=urlencode(query)).geturl()


def make_bucket(server: MotoServer | str, **params: str) -> Bucket:
    """Return a fresh place for one test's blobs: a new moto bucket, or a new prefix in
    the configured real bucket."""
    tag = uuid.uuid4().hex[:12]
    if isinstance(server, str):
        parts = urlsplit(server)
        prefix = "/".join(p for p in (parts.path.strip("/"), f"t{tag}") if p)
        url = _with_query(parts._replace(path=f"/{prefix}").geturl(), **params)
        endpoint = parse_qs(parts.query).get("endpoint", [None])[-1]
        return Bucket(url, parts.netloc, prefix, endpoint, {})
    name = f"imgcompress-{tag}"
    server.client().create_bucket(Bucket=name)  # type: ignore[attr-defined]
    url = _with_query(f"s3://{name}/blobs", endpoint=server.endpoint, region=REGION, **params)
    return Bucket(url, name, "blobs", server.endpoint, dict(MOTO_CREDENTIALS))


def remove_objects(bucket: Bucket) -> None:
    """Delete what a test wrote (a real bucket keeps nothing of ours)."""
    client = _boto(bucket)
    for key in bucket.object_keys():
        client.delete_object(Bucket=bucket.name, Key=key)  # type: ignore[attr-defined]


class FaultyS3:
    """A loopback HTTP server that answers every S3 request the same bad way: a status with
    an S3 error document, or silence for ``hang`` seconds (a slow bucket)."""

    def __init__(self, status: int = 503, code: str = "SlowDown", hang: float = 0.0) -> None:
        self.status, self.code, self.hang = status, code, hang
        self.requests = 0
        faulty = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                faulty.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if faulty.hang:
                    time.sleep(faulty.hang)
                body = (
                    f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{faulty.code}</Code>'
                    f"<Message>injected by the test</Message></Error>"
                ).encode()
                self.send_response(faulty.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        """Return http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()
