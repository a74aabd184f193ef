"""Retry behaviour of the worker for images and webhooks, on a fake clock, with no sockets:
the worker's RetryPolicy decides, the workflow records, time moves only when told."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from PIL import Image

from imgcompress_core import MemoryStorage, Service, Urls
from imgcompress_core.errors import FetchError, ImageFailure, NotificationError
from imgcompress_core.model import DeliveryState, ImageState
from imgcompress_core.options import WorkerConfig
from imgcompress_core.ports import Fetched
from imgcompress_core.testing import FakeClock, RecordingNotifier
from imgcompress_core.worker import Worker
from imgcompress_core.workflow import HostShares

pytestmark = pytest.mark.anyio

CONFIG = WorkerConfig(
    cpu_workers=1,
    max_attempts=3,
    retry_base_delay=10.0,
    retry_max_delay=40.0,
    webhook_max_attempts=3,
    webhook_retry_base=100.0,
    webhook_retry_max=1000.0,
)
CSV = b"S. No.,Product Name,Input Image Urls\n1,SKU1,https://img.example/a.jpg\n"


def jpeg() -> bytes:
    """A small real JPEG."""
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, "JPEG", quality=95)
    return out.getvalue()


@dataclass
class FlakyFetcher:
    """Fails with a transient error ``failures`` times, then serves a JPEG."""

    failures: int
    retry_after: float | None = None
    calls: int = 0

    async def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> Fetched:
        """Fail while failures last, then answer."""
        self.calls += 1
        if self.calls <= self.failures:
            raise FetchError(
                "timed out", code="download_timeout", retryable=True, retry_after=self.retry_after
            )
        return Fetched(url, jpeg(), "image/jpeg")


@dataclass
class RefusingNotifier:
    """A receiver that always answers with one error."""

    error: NotificationError
    calls: list[str] = field(default_factory=list)

    async def notify(self, url: str, payload: Mapping[str, Any], *, delivery_id: str) -> None:
        """Refuse."""
        self.calls.append(delivery_id)
        raise self.error


@pytest.fixture
def store() -> MemoryStorage:
    """An empty in-memory store."""
    return MemoryStorage()


async def submit(store: MemoryStorage, clock: FakeClock, webhook: str | None = None) -> str:
    """Store one single-image request, as an upload would."""

    service = Service(store, clock=clock, allow_private_networks=True)
    return (
        await service.submit(CSV, None, base_url="http://svc.example")
        if webhook is None
        else (await service.submit(CSV, webhook, base_url="http://svc.example"))
    )


def worker(store: MemoryStorage, clock: FakeClock, fetcher: Any, notifier: Any) -> Worker:
    """A worker on the fake clock."""
    return Worker(store, fetcher, notifier, Urls("http://svc.example"), CONFIG, clock=clock)


async def image_of(store: MemoryStorage, request_id: str) -> Any:
    """The request's only image."""
    [image] = await store.list_images(request_id)
    return image


async def test_transient_image_failures_back_off_then_succeed(store: MemoryStorage) -> None:
    """Each transient failure queues the image again no earlier than now and no later than
    the backoff cap; it is not tried before then, and the third attempt succeeds."""
    clock = FakeClock()
    request_id = await submit(store, clock)
    fetcher = FlakyFetcher(failures=2)
    w = worker(store, clock, fetcher, RecordingNotifier())
    for attempt, cap in ((1, 10.0), (2, 20.0)):
        await w.step()
        image = await image_of(store, request_id)
        assert (image.state, image.attempts) == (ImageState.QUEUED, attempt)
        assert image.failure is not None and image.failure.code == "download_timeout"
        lease = store._leases[image.image_id]
        assert clock.now <= lease.not_before <= clock.now + cap
        clock.now = lease.not_before - 0.001
        await w.step()
        assert fetcher.calls == attempt, "retried before its time"
        clock.now = lease.not_before
    await w.step()
    image = await image_of(store, request_id)
    assert (image.state, image.attempts) == (ImageState.DONE, 3)
    assert (await store.get_request(request_id)).status.value == "Completed"


async def test_image_gives_up_after_max_attempts(store: MemoryStorage) -> None:
    """A failure that stays transient fails the image for good at max_attempts."""
    clock = FakeClock()
    request_id = await submit(store, clock)
    fetcher = FlakyFetcher(failures=99)
    w = worker(store, clock, fetcher, RecordingNotifier())
    for _ in range(3):
        await w.step()
        clock.advance(CONFIG.retry_max_delay)
    image = await image_of(store, request_id)
    assert (image.state, image.attempts, fetcher.calls) == (ImageState.FAILED, 3, 3)
    assert (await store.get_request(request_id)).status.value == "Failed"


async def test_image_retry_after_is_honoured(store: MemoryStorage) -> None:
    """A server's Retry-After delays the next attempt at least that long (up to the cap)."""
    clock = FakeClock()
    request_id = await submit(store, clock)
    w = worker(store, clock, FlakyFetcher(failures=1, retry_after=30.0), RecordingNotifier())
    await w.step()
    image = await image_of(store, request_id)
    assert store._leases[image.image_id].not_before >= clock.now + 30.0


async def test_webhook_is_retried_with_backoff_then_delivered(store: MemoryStorage) -> None:
    """A receiver that fails twice gets the event on the third attempt, each retry due no
    later than the backoff cap, with the same delivery id every time."""
    clock = FakeClock()
    request_id = await submit(store, clock, "https://hooks.example/h")
    notifier = RecordingNotifier(fail_first=2)
    w = worker(store, clock, FlakyFetcher(failures=0), notifier)
    await w.step()
    for attempt in (1, 2):
        [delivery] = await store.list_deliveries(request_id)
        assert (delivery.state, delivery.attempts) == (DeliveryState.PENDING, attempt)
        assert clock.now <= delivery.next_attempt_at <= clock.now + 100.0 * 2 ** (attempt - 1)
        clock.now = delivery.next_attempt_at
        await w.step()
    [delivery] = await store.list_deliveries(request_id)
    assert (delivery.state, delivery.attempts) == (DeliveryState.DELIVERED, 3)
    [payload] = notifier.sent["https://hooks.example/h"]
    assert payload["_delivery_id"] == delivery.delivery_id


async def test_webhook_retry_after_is_honoured(store: MemoryStorage) -> None:
    """A receiver's Retry-After holds the next attempt back at least that long."""
    clock = FakeClock()
    request_id = await submit(store, clock, "https://hooks.example/h")
    notifier = RefusingNotifier(NotificationError("busy", retryable=True, retry_after=500.0))
    w = worker(store, clock, FlakyFetcher(failures=0), notifier)
    await w.step()
    clock.advance(499)
    await w.step()
    assert len(notifier.calls) == 1
    [delivery] = await store.list_deliveries(request_id)
    assert delivery.next_attempt_at >= clock.now + 1 - 0.001


async def test_webhook_not_retried_when_not_retryable(store: MemoryStorage) -> None:
    """A permanent refusal (410 Gone) is given up after one attempt."""
    clock = FakeClock()
    request_id = await submit(store, clock, "https://hooks.example/h")
    notifier = RefusingNotifier(NotificationError("gone", code="webhook_http_410", retryable=False))
    w = worker(store, clock, FlakyFetcher(failures=0), notifier)
    await w.step()
    clock.advance(10_000)
    await w.step()
    [delivery] = await store.list_deliveries(request_id)
    assert (delivery.state, delivery.attempts, len(notifier.calls)) == (DeliveryState.FAILED, 1, 1)


def test_a_host_that_times_out_gets_a_smaller_share() -> None:
    """Each timeout halves a host's share (down to one); answers in time restore it."""
    shares = HostShares(per_host=8)
    assert shares.cap("slow.example") == 8
    for expected in (4, 2, 1, 1):
        shares.timed_out("slow.example")
        assert shares.cap("slow.example") == expected
    assert shares.cap("fast.example") == 8
    shares.take("slow.example")
    assert shares.full() == {"slow.example"}
    shares.answered("slow.example")
    assert shares.cap("slow.example") == 2
    shares.give_back("slow.example")
    assert shares.full() == frozenset()


class _DownBlobs(MemoryStorage):
    """A store whose blob writes fail while ``down`` is set (a bucket outage)."""

    down = True

    async def put_blob(self, key: str, data: bytes, content_type: str, now: float) -> None:
        """Fail like an unreachable bucket while down."""
        if self.down:
            raise ImageFailure("the bucket is down", code="blob_store_unavailable", retryable=True)
        await super().put_blob(key, data, content_type, now)


async def test_a_storage_outage_does_not_use_up_the_images_attempts() -> None:
    """A blob store down for longer than max_attempts retries keeps the image queued (with
    a long schedule), and it is done once the store is back."""
    store = _DownBlobs()
    clock = FakeClock()
    request_id = await submit(store, clock)
    w = worker(store, clock, FlakyFetcher(failures=0), RecordingNotifier())
    for _ in range(CONFIG.max_attempts + 3):  # past the image's own 3 attempts
        await w.step()
        image = await image_of(store, request_id)
        assert image.state is ImageState.QUEUED
        assert image.failure is not None and image.failure.code == "blob_store_unavailable"
        clock.advance(60)
    store.down = False
    await w.step()
    image = await image_of(store, request_id)
    assert image.state is ImageState.DONE
