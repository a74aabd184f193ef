"""The BlobStore port on S3-compatible object storage (AWS S3, MinIO, R2, Ceph, ...).

Configured by one setting::

    IMGCOMPRESS_BLOB_URL=s3://bucket/prefix?endpoint=http://minio:9000&region=us-east-1

with credentials from the usual AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, web identity, instance metadata).
Query parameters: ``endpoint`` (omit for AWS; ``http://`` endpoints are allowed),
``region``, ``timeout`` (seconds per HTTP request, default 30) and ``retry_seconds``
(how long one operation keeps retrying connection errors and 5xx answers, default 60).

**Client: obstore** (Python bindings of Rust's ``object_store``, the crate behind
DataFusion, Polars and delta-rs). Chosen over aioboto3 because it is one self-contained
wheel with a native async API (no aiohttp/aiobotocore/botocore version pins to keep in
step), ships type stubs (``mypy --strict`` checks our calls), retries connection errors
and 5xx answers with backoff and jitter inside each call, reads the standard AWS
credential chain, and signs URLs locally (presigned GETs for ``/api/images/{id}``).

**Objects**: ``<prefix>/<sha256>``, written whole (one PUT, no multipart) with their
``Content-Type``, ``Cache-Control: public, max-age=31536000, immutable`` (the key is the
content hash, so the bytes at an address never change) and the user metadata
``x-amz-meta-written-at`` (the time the workflow stamped the write with). Writing a key
that exists writes it again: the bytes are identical, and the fresh ``Last-Modified``
is what keeps the sweep away from a blob a worker has just reused.

**Written time and the sweep**: ``blobs_written_before`` lists the prefix in key order
(``ListObjectsV2`` with ``start-after``) and compares each object's ``LastModified`` with
the cutoff, which needs no request per object. That assumes the caller's clock is the
wall clock (workers' and the bucket's clocks within a lease of each other, as NTP
gives); when the cutoff is more than a day away from this machine's clock (a simulated
clock, like the contract suite's), the ``written-at`` metadata is read instead, one
HEAD per object. ``delete_blobs`` reads each object's ``Last-Modified`` (HEAD) just
before deleting it and spares any written at or after the cutoff. **The small race**:
S3 has no delete conditional on the modification time, so a worker that writes the
same bytes again in the milliseconds between that HEAD and the DELETE (the blob was
unreferenced and older than the grace period, and a new image produced identical
bytes right then) loses its object; the image is then done but its bytes answer 404.
Enable bucket versioning if that must never happen: the deleted version stays
restorable.

**Failures**: a bucket that is down, slow, answers 5xx, denies access or does not
exist makes ``put_blob`` raise ``ImageFailure(code="blob_store_unavailable",
retryable=True)`` with the reason, so the worker retries the image with backoff (the
image is marked done only after its object is written: nothing is lost); the other
operations raise ``StorageUnavailable`` (503 over HTTP, logged by the sweep).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import anyio
import obstore as obs
from obstore.exceptions import BaseError, PermissionDeniedError, UnauthenticatedError
from obstore.store import S3Store

from imgcompress_core.errors import BlobNotFound, ImageFailure, StorageUnavailable
from imgcompress_core.model import Blob

if TYPE_CHECKING:
    from imgcompress_core.settings import Settings

__all__ = ["CACHE_CONTROL", "S3BlobStore", "create_blob_store"]

CACHE_CONTROL = "public, max-age=31536000, immutable"
WRITTEN_AT = "written-at"  # user metadata: x-amz-meta-written-at

_KEY = re.compile(r"[0-9a-f]{8,128}")
_SIMULATED_CLOCK = 86_400.0  # a cutoff this far from the wall clock comes from a fake clock
_LAST_MODIFIED_RESOLUTION = 1.0  # Last-Modified is in whole seconds
_HEADS_IN_FLIGHT = 16
_PARAMETERS = frozenset({"endpoint", "region", "timeout", "retry_seconds"})

# The exceptions a call to obstore raises for a failed request (FileNotFoundError, a
# subclass of OSError, for a missing key or bucket; TimeoutError and ConnectionError too).
_FAILURES = (BaseError, OSError)


def _reason(exc: BaseException) -> str:
    """Return the first line of an obstore error, without its debug dump."""
    text = str(exc).split("\n\nDebug source", 1)[0].strip()
    if "NoSuchBucket" in text:
        return "the bucket does not exist (NoSuchBucket)"
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError) or "AccessDenied" in text:
        return (
            "access denied: check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) "
            "and the bucket policy"
        )
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:300]


def _no_bucket(exc: BaseException) -> bool:
    return "NoSuchBucket" in str(exc)


class S3BlobStore:
    """The BlobStore port on an S3 bucket (under a key prefix), through obstore."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        timeout: float = 30.0,
        retry_seconds: float = 60.0,
        ping_seconds: float = 5.0,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self._ping_seconds = ping_seconds
        options: dict[str, Any] = {
            "timeout": timedelta(seconds=timeout),
            "connect_timeout": timedelta(seconds=min(timeout, 5.0)),
        }
        if endpoint and endpoint.startswith("http://"):
            options["allow_http"] = True
        settings: dict[str, Any] = dict(config or {})
        if endpoint:
            settings["endpoint"] = endpoint
        if region:
            settings["region"] = region
        retries = {"max_retries": 10, "retry_timeout": timedelta(seconds=retry_seconds)}
        self._store = S3Store(
            bucket,
            prefix=self.prefix or None,
            client_options=options,  # type: ignore[arg-type]
            retry_config=retries,  # type: ignore[arg-type]
            **settings,
        )

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> S3BlobStore:
        """Build the store from ``s3://bucket/prefix?endpoint=...&region=...``."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"an S3 blob URL is s3://bucket/prefix?endpoint=..., not {url!r}")
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        unknown = sorted(set(query) - _PARAMETERS)
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {', '.join(unknown)} in the S3 blob URL; "
                f"known: {', '.join(sorted(_PARAMETERS))}"
            )
        arguments: dict[str, Any] = {
            "endpoint": query.get("endpoint"),
            "region": query.get("region"),
        }
        arguments.update((k, float(query[k])) for k in ("timeout", "retry_seconds") if k in query)
        arguments.update(overrides)
        return cls(parts.netloc, parts.path, **arguments)

    def __repr__(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"S3BlobStore(s3://{self.bucket}/{self.prefix}{where})"

    def _unavailable(self, action: str, exc: BaseException) -> StorageUnavailable:
        return StorageUnavailable(
            f"the bucket s3://{self.bucket}/{self.prefix} {action}: {_reason(exc)}"
        )

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        """Nothing to connect: requests open pooled connections as they need them."""

    async def close(self) -> None:
        """Nothing to release (the connection pool goes with the store)."""

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the bucket answers a one-key listing in time."""
        try:
            with anyio.fail_after(self._ping_seconds):
                stream = obs.list(self._store, chunk_size=1)
                async for _ in stream:
                    break
        except TimeoutError as exc:
            raise StorageUnavailable(
                f"the bucket s3://{self.bucket}/{self.prefix} did not answer within "
                f"{self._ping_seconds:g} s"
            ) from exc
        except _FAILURES as exc:
            raise self._unavailable("does not answer", exc) from exc

    # -- the port ---------------------------------------------------------------------

    async def put_blob(self, key: str, data: bytes, content_type: str, now: float) -> None:
        """Write ``data`` under ``key`` (again, if it is there), stamped as written ``now``."""
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a blob key: {key!r}")
        attributes = {
            "Content-Type": content_type,
            "Cache-Control": CACHE_CONTROL,
            WRITTEN_AT: repr(float(now)),
        }
        try:
            await obs.put_async(self._store, key, data, attributes=attributes, use_multipart=False)
        except _FAILURES as exc:
            raise ImageFailure(
                f"the bucket s3://{self.bucket}/{self.prefix} could not store the image: "
                f"{_reason(exc)}; it will be tried again",
                code="blob_store_unavailable",
                retryable=True,
            ) from exc

    async def get_blob(self, key: str) -> Blob:
        """Return a blob or raise BlobNotFound (StorageUnavailable if the bucket fails)."""
        if not _KEY.fullmatch(key):
            raise BlobNotFound(key)
        try:
            result = await obs.get_async(self._store, key)
            data = bytes(await result.bytes_async())
        except FileNotFoundError as exc:
            if _no_bucket(exc):
                raise self._unavailable("cannot be read", exc) from exc
            raise BlobNotFound(key) from None
        except _FAILURES as exc:
            raise self._unavailable("cannot be read", exc) from exc
        content_type = result.attributes.get("Content-Type") or "application/octet-stream"
        return Blob(key, data, content_type)

    async def blobs_written_before(self, cutoff: float, after: str, limit: int) -> list[str]:
        """Return up to ``limit`` keys after ``after``, in key order, written before
        ``cutoff`` (by Last-Modified; see the module's notes on simulated clocks)."""
        found: list[str] = []
        if limit <= 0:
            return found
        simulated = abs(cutoff - time.time()) > _SIMULATED_CLOCK
        try:
            stream = obs.list(self._store, offset=after or None, chunk_size=1000)
            async for chunk in stream:
                for meta in chunk:
                    key = meta["path"]
                    if not _KEY.fullmatch(key) or key <= after:
                        continue  # another application's object under the prefix
                    if simulated:
                        written = await self._written_at(key)
                    else:
                        written = meta["last_modified"].timestamp()
                    if written is not None and written < cutoff:
                        found.append(key)
                        if len(found) == limit:
                            return found
        except _FAILURES as exc:
            raise self._unavailable("cannot be listed", exc) from exc
        return found

    async def delete_blobs(self, keys: Sequence[str], written_before: float) -> None:
        """Delete these blobs unless one was written again at or after ``written_before``
        (each checked with a HEAD just before its DELETE; see the module's note on the
        race this leaves)."""
        simulated = abs(written_before - time.time()) > _SIMULATED_CLOCK
        limiter = anyio.CapacityLimiter(_HEADS_IN_FLIGHT)
        failures: list[BaseException] = []

        async def delete_one(key: str) -> None:
            async with limiter:
                try:
                    if simulated:
                        written = await self._written_at(key)
                    else:
                        meta = await obs.head_async(self._store, key)
                        written = meta["last_modified"].timestamp() + _LAST_MODIFIED_RESOLUTION
                    if written is not None and written < written_before:
                        await obs.delete_async(self._store, key)
                except FileNotFoundError as exc:
                    if _no_bucket(exc):
                        failures.append(exc)
                except _FAILURES as exc:
                    failures.append(exc)

        async with anyio.create_task_group() as tasks:
            for key in keys:
                if _KEY.fullmatch(key):
                    tasks.start_soon(delete_one, key)
        if failures:
            raise self._unavailable(
                f"did not delete {len(failures)} of {len(keys)} blobs", failures[0]
            )

    # -- beyond the port --------------------------------------------------------------

    async def presigned_url(self, key: str, seconds: float) -> str:
        """Return a URL that GETs ``key`` without credentials for ``seconds`` (signed here,
        no request to the bucket)."""
        expires = timedelta(seconds=max(1, math.floor(seconds)))
        try:
            return await obs.sign_async(self._store, "GET", key, expires)
        except _FAILURES as exc:
            raise self._unavailable("cannot sign a link", exc) from exc

    async def _written_at(self, key: str) -> float | None:
        """Return the ``written-at`` stamp of ``key`` (else its Last-Modified), or None if
        it is gone."""
        try:
            result = await obs.get_async(self._store, key, options={"head": True})
        except FileNotFoundError as exc:
            if _no_bucket(exc):
                raise
            return None
        stamp = result.attributes.get(WRITTEN_AT)
        if stamp is not None:
            try:
                return float(stamp)
            except ValueError:
                pass
        return result.meta["last_modified"].timestamp() + _LAST_MODIFIED_RESOLUTION


def create_blob_store(settings: Settings) -> S3BlobStore:
    """Return the S3 blob store ``settings.blob_url`` names (the entry point's factory)."""
    if not settings.blob_url:
        raise ValueError("IMGCOMPRESS_BLOB_URL is not set")
    return S3BlobStore.from_url(settings.blob_url)
