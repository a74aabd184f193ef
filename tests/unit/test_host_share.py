"""A host's share limits downloads, not compressions: an image that waits for the
compression pool no longer holds its host's place, so the host's next images download
meanwhile (with one place per host, a slow compression would otherwise stall the host)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import anyio
import pytest
from PIL import Image

from imgcompress_core import MemoryStorage, Service, Urls
from imgcompress_core.compress import CompressedImage, CompressOptions, compress_image
from imgcompress_core.model import RequestStatus
from imgcompress_core.options import WorkerConfig
from imgcompress_core.ports import Fetched
from imgcompress_core.testing import RecordingNotifier
from imgcompress_core.worker import Worker

pytestmark = pytest.mark.anyio

IMAGES = 3
CSV = "S. No.,Product Name,Input Image Urls\n" + "".join(
    f"{n},SKU{n},https://img.example/{n}.jpg\n" for n in range(1, IMAGES + 1)
)


def jpeg(shade: int) -> bytes:
    """A small real JPEG of its own colour."""
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (shade, 30, 30)).save(out, "JPEG", quality=95)
    return out.getvalue()


@dataclass
class CountingFetcher:
    """Serves each URL its own JPEG and counts downloads."""

    urls: list[str] = field(default_factory=list)

    async def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> Fetched:
        """Answer at once."""
        self.urls.append(url)
        return Fetched(url, jpeg(40 * len(self.urls)), "image/jpeg")


async def test_images_of_a_host_download_while_earlier_ones_wait_to_compress() -> None:
    store = MemoryStorage()
    service = Service(store, allow_private_networks=True)
    request_id = await service.submit(CSV.encode(), None, base_url="http://svc.example")
    config = WorkerConfig(
        cpu_workers=1, cpu_pool="threads", connections_per_host=1, download_concurrency=8
    )
    fetcher = CountingFetcher()
    worker = Worker(store, fetcher, RecordingNotifier(), Urls("http://svc.example"), config)
    gate = anyio.Event()

    async def held_compress(data: bytes, options: CompressOptions) -> tuple[CompressedImage, float]:
        await gate.wait()  # the pool is busy elsewhere until the gate opens
        return compress_image(data, options), 0.0

    worker._compressor.compress = held_compress  # type: ignore[method-assign]
    stop = anyio.Event()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(worker.run, stop)
        with anyio.fail_after(10):
            while len(fetcher.urls) < IMAGES:  # all downloaded, none compressed yet
                await anyio.sleep(0.01)
        assert worker.shares.held == {}, "images waiting for compression hold the host"
        gate.set()
        with anyio.fail_after(10):
            while (await store.get_request(request_id)).status is RequestStatus.PENDING:
                await anyio.sleep(0.01)
        stop.set()
    assert (await store.get_request(request_id)).status is RequestStatus.COMPLETED
    assert sorted(fetcher.urls) == [f"https://img.example/{n}.jpg" for n in range(1, 4)]
