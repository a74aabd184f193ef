"""The whole job through the core, over real sockets: image server, SQLite, webhook receiver."""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

from imgcompress_core import (
    ImageNotFound,
    ImageState,
    Imgcompress,
    ManifestError,
    NotificationError,
    RequestNotFound,
    RequestStatus,
    Settings,
    WebhookNotifier,
)
from servers import LocalServer, corpus_images, manifest, photo

pytestmark = pytest.mark.anyio


def q50_tables() -> dict[int, list[int]]:
    """Return the JPEG quantization tables Pillow writes at quality 50."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "gray").save(out, "JPEG", quality=50)
    with Image.open(out) as reference:
        return dict(reference.quantization)  # type: ignore[attr-defined]


POOLS = pytest.mark.parametrize("cpu_pool", ["processes", "threads"])


@POOLS
async def test_csv_to_compressed_images_and_webhook(
    image_server: LocalServer, webhook_receiver: LocalServer, test_settings: Settings, cpu_pool: str
) -> None:
    """Every listed image is downloaded, compressed, stored; the webhook says Completed."""
    test_settings = test_settings.model_copy(update={"cpu_pool": cpu_pool})
    photos = corpus_images(3)
    urls = [image_server.add(f"/p{i}.jpg", data) for i, data in enumerate(photos)]
    missing = image_server.url("/missing.jpg")
    csv_bytes = manifest([("1", "SKU1", [urls[0], missing, urls[1]]), ("2", "SKU2", [urls[2]])])

    async with Imgcompress(test_settings) as ic:
        request_id = await ic.submit(csv_bytes, webhook_receiver.url("/hook"))
        report = await ic.wait(request_id, timeout=60)
        output = await ic.output_csv(request_id)
        stored = {
            i.image_id: await ic.image(i.image_id)
            for i in report.images
            if i.state is ImageState.DONE
        }

    assert report.request.status is RequestStatus.COMPLETED
    assert (report.progress.done, report.progress.failed, report.progress.total) == (3, 1, 4)
    by_url = {i.url: i for i in report.images}
    failed = by_url[missing]
    assert failed.state is ImageState.FAILED
    assert failed.failure is not None and failed.failure.code == "upstream_http_404"
    for url, original in zip(urls, photos, strict=True):
        record = by_url[url]
        data = stored[record.image_id].data
        assert len(data) <= len(original)
        with Image.open(io.BytesIO(data)) as out, Image.open(io.BytesIO(original)) as src:
            assert out.format == "JPEG"
            assert out.size == src.size
            assert dict(out.quantization) == q50_tables()  # type: ignore[attr-defined]
            assert not out.info.get("progressive")
        assert record.output_bytes == len(data)
        assert record.input_bytes == len(original)

    rows = list(csv.reader(io.StringIO(output)))
    assert rows[0] == ["S. No.", "Product Name", "Input Image Urls", "Output Image Urls"]
    first_outputs = rows[1][3].split(",")
    assert len(first_outputs) == 3 and first_outputs[1] == ""
    assert first_outputs[0].endswith(by_url[urls[0]].output_id or "-")
    assert rows[2][3].endswith(by_url[urls[2]].output_id or "-")

    [hook] = webhook_receiver.posts()
    body = hook.json()
    assert body["requestId"] == request_id
    assert body["status"] == "Completed"
    assert (body["total"], body["done"], body["failed"]) == (4, 3, 1)
    assert body["outputCsvUrl"].endswith(f"/api/requests/{request_id}/output.csv")


async def test_transient_failures_are_retried(
    image_server: LocalServer, test_settings: Settings
) -> None:
    """A server that answers 503 twice and then the image yields a done image (3 attempts)."""
    body = photo()
    url = image_server.script(
        "/flaky.jpg",
        [
            (503, {}, b"busy"),
            (503, {"Retry-After": "0"}, b"busy"),
            (200, {"Content-Type": "image/jpeg"}, body),
        ],
    )
    async with Imgcompress(test_settings) as ic:
        request_id = await ic.submit(manifest([("1", "A", [url])]))
        report = await ic.wait(request_id, timeout=30)
    [image] = report.images
    assert image.state is ImageState.DONE
    assert image.attempts == 3
    assert image_server.hits("/flaky.jpg") == 3


@POOLS
async def test_permanent_failures_fail_at_once_and_request_fails(
    image_server: LocalServer, webhook_receiver: LocalServer, test_settings: Settings, cpu_pool: str
) -> None:
    """Not-an-image fails without retry (its code crosses the process boundary intact);
    with nothing done the request is Failed."""
    test_settings = test_settings.model_copy(update={"cpu_pool": cpu_pool})
    url = image_server.add("/page.jpg", b"<html>not an image</html>", content_type="image/jpeg")
    async with Imgcompress(test_settings) as ic:
        request_id = await ic.submit(manifest([("1", "A", [url])]), webhook_receiver.url("/hook"))
        report = await ic.wait(request_id, timeout=30)
    [image] = report.images
    assert image.state is ImageState.FAILED
    assert image.failure is not None and image.failure.code == "not_an_image"
    assert image.attempts == 1
    assert report.request.status is RequestStatus.FAILED
    assert webhook_receiver.posts()[0].json()["status"] == "Failed"


async def test_webhook_failure_is_recorded_and_retried(
    image_server: LocalServer, webhook_receiver: LocalServer, test_settings: Settings
) -> None:
    """A receiver that fails once gets the event on the next attempt; status shows both."""
    webhook_receiver.script("/flaky-hook", [(500, {}, b"down"), (200, {}, b"ok")])
    url = image_server.add("/a.jpg", photo())
    async with Imgcompress(test_settings) as ic:
        request_id = await ic.submit(
            manifest([("1", "A", [url])]), webhook_receiver.url("/flaky-hook")
        )
        report = await ic.wait(request_id, timeout=30)
    [delivery] = report.deliveries
    assert delivery.state.value == "delivered"
    assert delivery.attempts == 2
    assert len(webhook_receiver.posts()) == 2


async def test_loopback_is_refused_by_default(
    image_server: LocalServer, test_settings: Settings
) -> None:
    """Without allow_private_networks the worker refuses loopback URLs, naming the reason.

    A host name, since a loopback IP literal is refused already at upload.
    """
    url = image_server.add("/a.jpg", photo()).replace("//127.0.0.1:", "//localhost:")
    settings = test_settings.model_copy(update={"allow_private_networks": False})
    async with Imgcompress(settings) as ic:
        request_id = await ic.submit(manifest([("1", "A", [url])]))
        report = await ic.wait(request_id, timeout=30)
    [image] = report.images
    assert image.failure is not None and image.failure.code == "blocked_destination"
    assert image_server.hits("/a.jpg") == 0


async def test_bad_csv_is_rejected_before_anything_is_stored(test_settings: Settings) -> None:
    """A bad CSV raises ManifestError listing problems; nothing is queued."""
    async with Imgcompress(test_settings) as ic:
        with pytest.raises(ManifestError) as caught:
            await ic.submit(b"S. No.,Product Name,Input Image Urls\n1,,ftp://x/y.jpg\n")
    reasons = {(p.row, p.column) for p in caught.value.problems}
    assert (2, "Product Name") in reasons
    assert (2, "Input Image Urls") in reasons


async def test_work_survives_a_restart(image_server: LocalServer, test_settings: Settings) -> None:
    """A request accepted by one process (no worker) is finished by the next on the same file."""
    url = image_server.add("/a.jpg", photo())
    async with Imgcompress(test_settings, run_worker=False) as ic:
        request_id = await ic.submit(manifest([("1", "A", [url])]))
    async with Imgcompress(test_settings) as ic:
        report = await ic.wait(request_id, timeout=30)
    assert report.request.status is RequestStatus.COMPLETED


async def test_finished_requests_expire_after_retention(
    image_server: LocalServer, test_settings: Settings
) -> None:
    """With retention set, a finished request and its images are deleted by the sweep."""
    url = image_server.add("/a.jpg", photo())
    settings = test_settings.model_copy(update={"retention_seconds": 0.2})
    async with Imgcompress(settings) as ic:
        request_id = await ic.submit(manifest([("1", "A", [url])]))
        report = await ic.wait(request_id, timeout=30)
        [image] = report.images
        with anyio.fail_after(10):
            while True:
                try:
                    await ic.status(request_id)
                except RequestNotFound:
                    break
                await anyio.sleep(0.05)
        with pytest.raises(ImageNotFound):
            await ic.image(image.image_id)


def documented_verify() -> Callable[[str, dict[str, str], bytes], bool]:
    """Return the verify() function exactly as docs/api.md shows it to receivers."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/api.md", "exec"), namespace)
    return namespace["verify"]  # type: ignore[no-any-return]


async def test_signed_webhook_verifies_with_the_documented_snippet(
    image_server: LocalServer, webhook_receiver: LocalServer, test_settings: Settings
) -> None:
    """A receiver down for two attempts gets the delivery; same webhook-id, valid signature."""
    secret = "whsec_" + base64.b64encode(b"a very secret key").decode()
    webhook_receiver.script("/signed", [(503, {}, b"down"), (500, {}, b"down"), (204, {}, b"")])
    url = image_server.add("/a.jpg", photo())
    settings = test_settings.model_copy(update={"webhook_secret": secret})
    async with Imgcompress(settings) as ic:
        request_id = await ic.submit(manifest([("1", "A", [url])]), webhook_receiver.url("/signed"))
        report = await ic.wait(request_id, timeout=30)
    [delivery] = report.deliveries
    assert (delivery.state.value, delivery.attempts) == ("delivered", 3)
    posts = webhook_receiver.posts()
    assert len(posts) == 3
    verify = documented_verify()
    ids = set()
    for post in posts:
        headers = {k.lower(): v for k, v in post.headers.items()}
        assert verify(secret, headers, post.body)
        assert not verify("whsec_" + base64.b64encode(b"wrong").decode(), headers, post.body)
        ids.add(headers["webhook-id"])
    assert ids == {delivery.delivery_id}
    assert posts[-1].json()["requestId"] == request_id


async def test_webhook_410_is_not_retried(
    image_server: LocalServer, webhook_receiver: LocalServer, test_settings: Settings
) -> None:
    """A receiver answering 410 Gone gets one attempt; the delivery is failed for good."""
    webhook_receiver.script("/gone", [(410, {}, b"gone")])
    url = image_server.add("/a.jpg", photo())
    async with Imgcompress(test_settings) as ic:
        request_id = await ic.submit(manifest([("1", "A", [url])]), webhook_receiver.url("/gone"))
        report = await ic.wait(request_id, timeout=30)
        await anyio.sleep(0.5)
    [delivery] = report.deliveries
    assert delivery.state.value == "failed"
    assert delivery.attempts == 1
    assert len(webhook_receiver.posts()) == 1


async def test_webhook_retry_after_reaches_the_retry_policy(webhook_receiver: LocalServer) -> None:
    """A receiver's 503 with Retry-After: 2 becomes a retryable error carrying 2 seconds,
    which the worker's RetryPolicy honours (tests/unit/test_worker_retries.py shows that on
    a fake clock, without waiting)."""
    webhook_receiver.script("/busy", [(503, {"Retry-After": "2"}, b"busy")])
    notifier = WebhookNotifier(timeout=5, allow_private_networks=True)
    try:
        with pytest.raises(NotificationError) as caught:
            await notifier.notify(webhook_receiver.url("/busy"), {"x": 1}, delivery_id="d1")
    finally:
        await notifier.aclose()
    assert caught.value.retryable
    assert caught.value.retry_after == 2.0
