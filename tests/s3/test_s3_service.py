"""The service on S3 (moto's server): images land in the bucket, /api/images/{id} redirects
to a presigned link, /ready reports the bucket, and a bucket that disappears mid-run and
comes back costs retries, never an image (that test always runs on a moto server of its own:
a real bucket cannot be switched off)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from litestar.testing import AsyncTestClient
from s3_server import Bucket, MotoServer, make_bucket

from imgcompress_core import Imgcompress, Settings
from imgcompress_core.workflow import blob_key
from imgcompress_web import create_app
from servers import LocalServer, photo

pytestmark = pytest.mark.anyio


def csv_of(image_server: LocalServer, count: int, first: int = 0) -> bytes:
    """A CSV of ``count`` products with one distinct photo each."""
    lines = ["S. No.,Product Name,Input Image Urls"]
    for n in range(first, first + count):
        url = image_server.add(f"/p{n}.jpg", photo(96, 64, seed=n))
        lines.append(f"{n + 1},SKU{n + 1},{url}")
    return ("\n".join(lines) + "\n").encode()


async def wait_final(client: AsyncTestClient[Any], request_id: str) -> dict[str, Any]:
    """Poll the status document until the request is final."""
    with anyio.fail_after(60):
        while True:
            status: dict[str, Any] = (await client.get(f"/api/status/{request_id}")).json()
            if status["status"] != "Pending":
                return status
            await anyio.sleep(0.05)


def images_of(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [image for product in status["products"] for image in product["images"]]


def service_settings(test_settings: Settings, bucket: Bucket, **update: Any) -> Settings:
    return test_settings.model_copy(
        update={"blob_url": bucket.url, "trusted_hosts": "testserver.local", **update}
    )


async def test_images_in_the_bucket_served_by_presigned_redirect(
    test_settings: Settings, image_server: LocalServer, s3_bucket: Bucket
) -> None:
    """Every output is one object in the bucket; the image endpoint redirects to a
    presigned GET that serves the bytes with their type and immutable caching."""
    settings = service_settings(test_settings, s3_bucket, blob_presign_seconds=600)
    async with AsyncTestClient(app=create_app(settings)) as client:
        assert (await client.get("/ready")).status_code == 200
        upload = await client.post(
            "/api/upload", files={"file": ("p.csv", csv_of(image_server, 3), "text/csv")}
        )
        status = await wait_final(client, upload.json()["requestId"])
        assert status["status"] == "Completed"
        images = images_of(status)
        assert len(s3_bucket.object_keys()) == 3
        for image in images:
            path = image["outputUrl"].split("testserver.local", 1)[1]
            assert path.startswith("/api/images/")  # the service's own link, not the bucket's
            answer = await client.get(path, follow_redirects=False)
            assert answer.status_code == 302
            assert answer.headers["cache-control"] == "private, max-age=300"
            assert "X-Amz-Signature=" in answer.headers["location"]
            async with httpx.AsyncClient() as plain:  # no credentials: the link is enough
                fetched = await plain.get(answer.headers["location"])
            assert fetched.status_code == 200
            assert fetched.headers["content-type"] == "image/jpeg"
            assert fetched.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert len(fetched.content) == image["outputBytes"]


async def test_public_bucket_url_goes_into_the_links(
    test_settings: Settings, image_server: LocalServer, s3_bucket: Bucket
) -> None:
    """With IMGCOMPRESS_BLOB_PUBLIC_URL the status and output CSV link to <public>/<sha256>,
    and each such link names an object in the bucket."""
    public = "https://cdn.example.com/imgs"
    settings = service_settings(test_settings, s3_bucket, blob_public_url=public)
    async with AsyncTestClient(app=create_app(settings)) as client:
        upload = await client.post(
            "/api/upload", files={"file": ("p.csv", csv_of(image_server, 2), "text/csv")}
        )
        request_id = upload.json()["requestId"]
        status = await wait_final(client, request_id)
        links = {image["outputUrl"] for image in images_of(status)}
        keys = {f"{public}/{key.rsplit('/', 1)[1]}" for key in s3_bucket.object_keys()}
        assert links == keys
        csv = (await client.get(f"/api/requests/{request_id}/output.csv")).text
        assert all(link in csv for link in links)


@pytest.fixture
def own_server() -> Iterator[MotoServer]:
    """A moto server of this test's own, which it may stop and start."""
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


def outage_bucket(server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    # Short client timeouts: the store gives up within a second, the worker retries.
    bucket = make_bucket(server, timeout="1", retry_seconds="0.3")
    for name, value in bucket.env.items():
        monkeypatch.setenv(name, value)
    return bucket


@pytest.mark.parametrize("outage", ["server stopped", "bucket deleted"])
async def test_bucket_disappears_mid_run_and_comes_back(
    test_settings: Settings,
    image_server: LocalServer,
    own_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
    outage: str,
) -> None:
    """A request finishes; the bucket goes away (its server stops, or the bucket is
    deleted); the next request's images fail to store as blob_store_unavailable and are
    retried while /ready answers 503; the bucket comes back and every image completes,
    each output in the bucket: none lost."""
    bucket = outage_bucket(own_server, monkeypatch)
    settings = service_settings(
        test_settings, bucket, max_attempts=100, retry_base_delay=0.05, retry_max_delay=0.3
    )
    s3: Any = own_server.client()
    async with AsyncTestClient(app=create_app(settings)) as client:
        first = await client.post(
            "/api/upload", files={"file": ("a.csv", csv_of(image_server, 5), "text/csv")}
        )
        assert (await wait_final(client, first.json()["requestId"]))["status"] == "Completed"

        if outage == "server stopped":
            own_server.stop()
        else:
            for key in bucket.object_keys():
                s3.delete_object(Bucket=bucket.name, Key=key)
            s3.delete_bucket(Bucket=bucket.name)
        second = await client.post(
            "/api/upload", files={"file": ("b.csv", csv_of(image_server, 12, 5), "text/csv")}
        )
        request_id = second.json()["requestId"]
        with anyio.fail_after(30):  # the worker meets the outage and records why
            while True:
                status = (await client.get(f"/api/status/{request_id}")).json()
                errors = {(i["error"] or {}).get("code") for i in images_of(status)}
                if "blob_store_unavailable" in errors:
                    break
                await anyio.sleep(0.05)
        assert status["status"] == "Pending"
        message = next(i["error"]["message"] for i in images_of(status) if i["error"])
        assert f"s3://{bucket.name}/blobs" in message
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert bucket.name in ready.json()["detail"]

        if outage == "server stopped":
            own_server.start()
        else:
            s3.create_bucket(Bucket=bucket.name)
        status = await wait_final(client, request_id)
        assert (await client.get("/ready")).status_code == 200

    images = images_of(status)
    assert [image["state"] for image in images] == ["done"] * 12
    assert all(image["error"] is None for image in images)  # a success clears the reason
    assert max(image["attempts"] for image in images) >= 2  # retried, not lost
    stored = {key.rsplit("/", 1)[1] for key in bucket.object_keys()}
    assert len(stored) >= 12  # every output of the second request is in the bucket
    if outage == "server stopped":
        assert len(stored) == 17  # and the first request's outputs survived the outage


async def test_an_orphan_object_goes_with_the_next_sweep(
    test_settings: Settings, image_server: LocalServer, s3_bucket: Bucket
) -> None:
    """An object nothing references (a worker died between writing it and marking its
    image done) is deleted by the sweep once it is older than the grace period (by
    Last-Modified, on the wall clock); referenced ones stay."""
    settings = test_settings.model_copy(update={"blob_url": s3_bucket.url})
    async with Imgcompress(settings) as ic:
        request_id = await ic.submit(csv_of(image_server, 2))
        await ic.wait(request_id, timeout=30)
        assert ic.blobs is not None and ic.worker is not None
        orphan = b"written, then the worker died"
        await ic.blobs.put_blob(blob_key(orphan), orphan, "image/jpeg", time.time())
        assert len(s3_bucket.object_keys()) == 3
        # A grace period that has already passed: every object is old enough to go.
        assert await ic.worker.workflow.sweep_blobs(grace_seconds=-5) == 1
        assert len(s3_bucket.object_keys()) == 2
        for image in (await ic.status(request_id)).images:
            assert await ic.image_location(image.image_id)  # still there, still linked
