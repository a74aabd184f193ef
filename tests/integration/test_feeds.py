"""Recurring feeds (issue: never fetch or compress the same image twice), on SQLite and on
MongoDB: duplicate URLs in a request, a feed sent again (conditional re-fetch), the same
bytes at a new URL (content cache), stable links, tenants kept apart, retrying only what
failed, the history and the zip."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from imgcompress_core import Imgcompress, RequestNotFinished, Settings
from imgcompress_core.model import ImageState, RequestStatus
from imgcompress_core.ports import NullMetrics
from servers import LocalServer, manifest, photo

pytestmark = pytest.mark.anyio


class CountingMetrics(NullMetrics):
    """Counts compressions (every compression reports its time)."""

    def __init__(self) -> None:
        self.compressions = 0

    def compress_seconds(self, seconds: float) -> None:
        """Count one compression."""
        self.compressions += 1


@pytest.fixture
def feed_settings(test_settings: Settings, store: tuple[str, str | None]) -> Settings:
    """The test settings on the store under test."""
    return test_settings.model_copy(update={"mongodb_uri": store[1]})


@asynccontextmanager
async def service(settings: Settings, metrics: CountingMetrics) -> AsyncIterator[Imgcompress]:
    """An Imgcompress with a worker, counting compressions."""
    async with Imgcompress(settings, metrics=metrics) as ic:
        yield ic


def outputs_by_url(report: Any) -> dict[str, list[str | None]]:
    """Map each input URL to the output URLs its rows got."""
    found: dict[str, list[str | None]] = {}
    for product in report.to_document(_urls())["products"]:
        for image in product["images"]:
            found.setdefault(image["inputUrl"], []).append(image["outputUrl"])
    return found


def _urls() -> Any:
    from imgcompress_core import Urls

    return Urls("http://svc.example")


async def test_a_url_repeated_in_a_request_is_fetched_and_compressed_once(
    image_server: LocalServer, feed_settings: Settings
) -> None:
    """Three rows share a photo: one download, one compression, the same link for all."""
    shared = image_server.add("/shared.jpg", photo(seed=1), headers={"ETag": '"s1"'})
    other = image_server.add("/other.jpg", photo(seed=2))
    metrics = CountingMetrics()
    async with service(feed_settings, metrics) as ic:
        rows = [("1", "A", [shared]), ("2", "B", [shared, other]), ("3", "C", [shared])]
        request_id = await ic.submit(manifest(rows))
        report = await ic.wait(request_id, timeout=30)
    assert report.request.status is RequestStatus.COMPLETED
    assert all(i.state is ImageState.DONE for i in report.images)
    assert image_server.hits("/shared.jpg") == 1
    assert metrics.compressions == 2
    links = outputs_by_url(report)[shared]
    assert len(links) == 3 and len(set(links)) == 1 and links[0]
    assert sorted(i.reused or "" for i in report.images) == ["", "", "same-content", "same-content"]


async def test_a_feed_sent_again_is_neither_downloaded_nor_compressed(
    image_server: LocalServer, feed_settings: Settings
) -> None:
    """The second run asks conditionally (304: no body), compresses nothing, and every
    row keeps its link; a changed image is downloaded and compressed again."""
    urls = [
        image_server.add(f"/p{n}.jpg", photo(seed=n), headers={"ETag": f'"v1-{n}"'})
        for n in range(3)
    ]
    rows = [(str(n + 1), f"P{n}", [url]) for n, url in enumerate(urls)]
    metrics = CountingMetrics()
    async with service(feed_settings, metrics) as ic:
        first = await ic.wait(await ic.submit(manifest(rows)), timeout=30)
        sent_first = image_server.body_bytes_sent
        image_server.add("/p2.jpg", photo(seed=99), headers={"ETag": '"v2-2"'})  # changed
        second = await ic.wait(await ic.submit(manifest(rows)), timeout=30)
    assert metrics.compressions == 3 + 1
    assert image_server.not_modified == 2
    changed = len(image_server.routes["/p2.jpg"].responses[0][2])
    assert image_server.body_bytes_sent - sent_first == changed  # only the changed image
    reused = {i.url: i.reused for i in second.images}
    assert reused == {urls[0]: "not-modified", urls[1]: "not-modified", urls[2]: None}
    before, after = outputs_by_url(first), outputs_by_url(second)
    assert after[urls[0]] == before[urls[0]] and after[urls[1]] == before[urls[1]]
    assert after[urls[2]] != before[urls[2]]


async def test_the_same_bytes_at_a_new_url_reuse_the_output(
    image_server: LocalServer, feed_settings: Settings
) -> None:
    """An image moved to a new URL (same bytes) is downloaded but not compressed, and
    keeps its link."""
    data = photo(seed=5)
    old = image_server.add("/old.jpg", data)
    new = image_server.add("/new.jpg", data)
    metrics = CountingMetrics()
    async with service(feed_settings, metrics) as ic:
        first = await ic.wait(await ic.submit(manifest([("1", "A", [old])])), timeout=30)
        second = await ic.wait(await ic.submit(manifest([("1", "A", [new])])), timeout=30)
    assert metrics.compressions == 1
    [image] = second.images
    assert image.reused == "same-content"
    assert outputs_by_url(second)[new] == outputs_by_url(first)[old]


async def test_tenants_never_share_outputs(
    image_server: LocalServer, feed_settings: Settings
) -> None:
    """With API keys, the same image for two owners is processed for each, under links of
    its own: one tenant learns nothing of what another processed."""
    url = image_server.add("/a.jpg", photo(seed=7), headers={"ETag": '"a"'})
    metrics = CountingMetrics()
    async with service(feed_settings, metrics) as ic:
        alice = await ic.wait(
            await ic.submit(manifest([("1", "A", [url])]), owner="alice"), timeout=30
        )
        bob = await ic.wait(await ic.submit(manifest([("1", "A", [url])]), owner="bob"), timeout=30)
    assert metrics.compressions == 2
    assert [i.reused for i in bob.images] == [None]
    assert outputs_by_url(alice)[url] != outputs_by_url(bob)[url]


async def test_retry_queues_only_the_failed_images_and_sends_a_new_webhook(
    image_server: LocalServer, webhook_receiver: LocalServer, feed_settings: Settings
) -> None:
    """A missing image fails; once it is there, retry queues only it; the request is
    Pending, then Completed with a second webhook (a new delivery id). Retrying a Pending
    request is refused."""
    good = image_server.add("/good.jpg", photo(seed=8))
    missing = image_server.url("/later.jpg")  # 404 for now
    metrics = CountingMetrics()
    async with service(feed_settings, metrics) as ic:
        request_id = await ic.submit(
            manifest([("1", "A", [good, missing])]), webhook_receiver.url("/hook")
        )
        first = await ic.wait(request_id, timeout=30)
        assert (first.progress.done, first.progress.failed) == (1, 1)
        image_server.add("/later.jpg", photo(seed=9))
        assert await ic.retry_failed(request_id) == 1
        with pytest.raises(RequestNotFinished):
            await ic.retry_failed(request_id)
        second = await ic.wait(request_id, timeout=30)
        assert await ic.retry_failed(request_id) == 0  # nothing failed any more
    assert (second.progress.done, second.progress.failed) == (2, 0)
    assert second.request.round == 2
    assert image_server.hits("/good.jpg") == 1  # the done image was not redone
    posts = webhook_receiver.posts()
    assert [p.json()["status"] for p in posts] == ["Completed", "Completed"]
    assert len({p.headers["webhook-id"] for p in posts}) == 2


async def test_history_is_newest_first_and_per_owner(
    image_server: LocalServer, feed_settings: Settings
) -> None:
    """The history lists the caller's requests newest first, page by page."""
    url = image_server.add("/h.jpg", photo(seed=10))
    async with service(
        feed_settings.model_copy(update={"run_worker": False}), CountingMetrics()
    ) as ic:
        mine = [await ic.submit(manifest([("1", "A", [url])]), owner="me") for _ in range(3)]
        theirs = await ic.submit(manifest([("1", "A", [url])]), owner="them")
        page = await ic.history(owner="me", limit=2)
        assert [r.request_id for r, _ in page] == [mine[2], mine[1]]
        last = page[-1][0]
        rest = await ic.history(owner="me", before=(last.created_at, last.request_id), limit=2)
        assert [r.request_id for r, _ in rest] == [mine[0]]
        everyone = [r.request_id for r, _ in await ic.history(owner=None, limit=10)]
        assert theirs in everyone and set(mine) <= set(everyone)
        assert all(p.total == 1 for _, p in page)


async def test_zip_holds_every_output_under_its_row_name(
    image_server: LocalServer, feed_settings: Settings
) -> None:
    """The zip names each processed image ``{S. No.}-{Product}-{position}.{ext}``, holds
    the served bytes, and leaves failed images out."""
    a, b = image_server.add("/z1.jpg", photo(seed=11)), image_server.add("/z2.jpg", photo(seed=12))
    missing = image_server.url("/nope.jpg")
    async with service(feed_settings, CountingMetrics()) as ic:
        request_id = await ic.submit(
            manifest([("7", "Red Chair/XL", [a, b]), ("8", "Lamp", [missing])])
        )
        report = await ic.wait(request_id, timeout=30)
        data = b"".join([chunk async for chunk in await ic.stream_zip(request_id)])
        served = {
            i.position: (await ic.image(i.output_id or i.image_id)).data
            for i in report.images
            if i.row == 2
        }
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.namelist() == ["7-Red_Chair_XL-1.jpg", "7-Red_Chair_XL-2.jpg"]
    assert archive.read("7-Red_Chair_XL-1.jpg") == served[0]
    assert archive.read("7-Red_Chair_XL-2.jpg") == served[1]


@pytest.mark.parametrize(
    "changed",
    [
        {"jpeg_quality": 80},
        {"jpeg_encoder": "libjpeg-turbo-robidoux"},
        {"jpeg_progressive": True},
        {"accelerators": False},
    ],
    ids=["quality", "encoder", "progressive", "no-accelerators"],
)
async def test_new_encoder_settings_are_not_served_from_the_cache(
    image_server: LocalServer, feed_settings: Settings, changed: dict[str, Any]
) -> None:
    """Outputs are reused only for the same recipe: after the service's default quality or
    any setting that changes the bytes written changes, the same image is compressed
    again; with the settings as they were, the first output is reused."""
    url = image_server.add("/q.jpg", photo(seed=13), headers={"ETag": '"q"'})
    metrics = CountingMetrics()
    changed_settings = feed_settings.model_copy(update=changed)
    async with service(feed_settings, metrics) as ic:
        first = await ic.wait(await ic.submit(manifest([("1", "A", [url])])), timeout=30)
    async with service(changed_settings, metrics) as ic:
        report = await ic.wait(await ic.submit(manifest([("1", "A", [url])])), timeout=30)
    assert metrics.compressions == 2
    assert [i.reused for i in report.images] == [None]
    assert report.images[0].output_id != first.images[0].output_id
    async with service(feed_settings, metrics) as ic:
        again = await ic.wait(await ic.submit(manifest([("1", "A", [url])])), timeout=30)
    assert metrics.compressions == 2
    assert [i.reused for i in again.images] == ["not-modified"]
