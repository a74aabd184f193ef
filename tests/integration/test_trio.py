"""The core under trio: it is written against anyio, so an embedder on trio gets the same job."""

from __future__ import annotations

import io
import threading

import anyio
import pytest
import trio
from PIL import Image

from imgcompress_core import ImageState, Imgcompress, RequestStatus, Settings
from servers import LocalServer, corpus_images, manifest, photo

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """Run this module's tests on trio instead of asyncio."""
    return "trio"


@pytest.mark.parametrize("cpu_pool", ["processes", "threads"])
async def test_the_whole_job_runs_under_trio(
    image_server: LocalServer, webhook_receiver: LocalServer, test_settings: Settings, cpu_pool: str
) -> None:
    """CSV to compressed images, output CSV and webhook, on trio's event loop."""
    trio.lowlevel.current_trio_token()  # fails unless this test really runs on trio
    test_settings = test_settings.model_copy(update={"cpu_pool": cpu_pool})
    photos = corpus_images(3)
    urls = [image_server.add(f"/t{i}.jpg", data) for i, data in enumerate(photos)]
    flaky = image_server.script(
        "/flaky.jpg",
        [(503, {"Retry-After": "0"}, b"busy"), (200, {"Content-Type": "image/jpeg"}, photo())],
    )
    missing = image_server.url("/missing.jpg")
    csv_bytes = manifest([("1", "A", [urls[0], missing, flaky]), ("2", "B", urls[1:])])

    async with Imgcompress(test_settings) as ic:
        request_id = await ic.submit(csv_bytes, webhook_receiver.url("/hook"))
        report = await ic.wait(request_id, timeout=60)
        output = await ic.output_csv(request_id)
        done = [i for i in report.images if i.state is ImageState.DONE]
        stored = [await ic.image(i.image_id) for i in done]

    assert report.request.status is RequestStatus.COMPLETED
    assert (report.progress.done, report.progress.failed) == (4, 1)
    by_url = {i.url: i for i in report.images}
    assert by_url[flaky].attempts == 2
    failure = by_url[missing].failure
    assert failure is not None and failure.code == "upstream_http_404"
    for image in stored:
        with Image.open(io.BytesIO(image.data)) as out:
            assert out.format == "JPEG"
    assert output.count("\n") == 3  # header and two product rows
    [hook] = webhook_receiver.posts()
    assert hook.json()["status"] == "Completed"


async def test_cancelling_under_trio_leaves_work_for_the_next_start(
    image_server: LocalServer, test_settings: Settings
) -> None:
    """A trio cancel scope stops the service mid-job; a new one on the same store finishes it."""
    photos = corpus_images(6)
    later = threading.Event()  # all but the first photo wait for it: the cancel comes first
    urls = [
        image_server.add(f"/c{i}.jpg", data, hold=later if i else None)
        for i, data in enumerate(photos)
    ]
    test_settings = test_settings.model_copy(update={"lease_seconds": 1.0})

    with trio.move_on_after(30) as scope:  # a backstop: the test fails if it is ever hit
        async with Imgcompress(test_settings) as ic:
            request_id = await ic.submit(manifest([("1", "A", urls)]))
            while (done := (await ic.status(request_id, detail=False)).progress.done) == 0:
                await anyio.sleep(0.02)
            scope.cancel()  # leave the context with compressions in flight
    assert scope.cancelled_caught
    assert done < len(urls)  # five photos were still downloading
    later.set()

    async with Imgcompress(test_settings) as ic:
        report = await ic.wait(request_id, timeout=60)
    assert report.request.status is RequestStatus.COMPLETED
    assert report.progress.done == len(urls)
