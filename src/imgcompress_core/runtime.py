"""The composition root: wire settings, a store, the fetcher, the notifier and a worker.

``Imgcompress`` is what an application embeds, and the only thing the web adapter and
the CLI use (they never reach past it to its store or its service)::

    async with Imgcompress(Settings(), storage=MemoryStorage()) as ic:
        request_id = await ic.submit(csv_bytes)
        report = await ic.wait(request_id)

Nothing connects until the ``async with`` block is entered.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self, TypeVar

import anyio

from .blobs import PresignsUrls, blobs_from_settings, public_path
from .errors import StorageUnavailable
from .fetch import HttpxFetcher
from .model import DeliveryState, ImageRecord, ImageState, Progress, RequestRecord, StoredImage
from .notify import WebhookNotifier
from .options import default_policy, fetch_options, manifest_limits, own_hosts, worker_config
from .policy import OutputPolicy
from .ports import BlobStore, Fetcher, Lifecycle, Metrics, Notifier, Storage
from .samples import SampleFetcher
from .service import Service, StatusReport, Urls
from .settings import Settings
from .stores import storage_from_settings
from .worker import Worker

__all__ = ["Imgcompress"]


class _AllMetrics:
    """The Metrics port over several sinks: each observation goes to every one."""

    def __init__(self, sinks: Sequence[Metrics]) -> None:
        self._sinks = tuple(sinks)

    def image_done(self, input_bytes: int, output_bytes: int) -> None:
        """An image was compressed and stored."""
        for sink in self._sinks:
            sink.image_done(input_bytes, output_bytes)

    def image_failed(self, code: str) -> None:
        """An image failed for good with this reason code."""
        for sink in self._sinks:
            sink.image_failed(code)

    def fetch_seconds(self, seconds: float) -> None:
        """A download took this long."""
        for sink in self._sinks:
            sink.fetch_seconds(seconds)

    def compress_seconds(self, seconds: float) -> None:
        """Decoding and re-encoding one image took this long."""
        for sink in self._sinks:
            sink.compress_seconds(seconds)

    def request_finished(self, status: str) -> None:
        """A request reached its final status."""
        for sink in self._sinks:
            sink.request_finished(status)


_Chunk = TypeVar("_Chunk", str, bytes)


async def _primed(chunks: AsyncIterator[_Chunk]) -> AsyncIterator[_Chunk]:
    """Start a stream: its first chunk is made now, so errors (not found, still pending)
    are raised before a response begins, never in the middle of its body."""
    first = await anext(chunks)

    async def all_chunks() -> AsyncIterator[_Chunk]:
        yield first
        async for chunk in chunks:
            yield chunk

    return all_chunks()


class Imgcompress:
    """imgcompress wired up: submit CSVs, watch them, read results; optionally work too."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        storage: Storage | None = None,
        blobs: BlobStore | None = None,
        fetcher: Fetcher | None = None,
        notifier: Notifier | None = None,
        run_worker: bool = True,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.storage = storage if storage is not None else storage_from_settings(self.settings)
        # None: the processed bytes live in ``storage`` too (no IMGCOMPRESS_BLOB_URL)
        self.blobs = blobs if blobs is not None else blobs_from_settings(self.settings)
        public = (self.settings.blob_public_url or "").rstrip("/")
        if public and self.blobs is None:
            raise ValueError(
                "IMGCOMPRESS_BLOB_PUBLIC_URL needs IMGCOMPRESS_BLOB_URL: without it the images "
                "are in the database, which no public URL serves"
            )
        self.blob_public_url = public  # where blob keys are served directly ('': nowhere)
        self.urls = Urls(self.settings.base_url())
        self._fetcher = fetcher
        self._notifier = notifier
        self._run_worker = run_worker
        self._clock = clock
        self._metrics: list[Metrics] = [] if metrics is None else [metrics]
        self._entered = False
        self._stack = AsyncExitStack()
        self.worker: Worker | None = None
        self.service = Service(
            self.storage,
            blobs=self.blobs,
            limits=manifest_limits(self.settings),
            allow_private_networks=self.settings.allow_private_networks,
            webhook_hosts=self.settings.webhook_hosts(),
            clock=clock,
            on_submit=self._wake,
            image_link=self.direct_link if self.blob_public_url else None,
            default_policy=default_policy(self.settings),
        )

    def _wake(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    def add_metrics(self, metrics: Metrics) -> None:
        """Also send the worker's observations to ``metrics`` (before ``async with``; adding
        the same object twice keeps one)."""
        if self._entered:
            raise RuntimeError("add metrics before entering the Imgcompress")
        if not any(sink is metrics for sink in self._metrics):
            self._metrics.append(metrics)

    def _metrics_sink(self) -> Metrics | None:
        if len(self._metrics) <= 1:
            return self._metrics[0] if self._metrics else None
        return _AllMetrics(self._metrics)

    async def __aenter__(self) -> Self:
        self._stack = AsyncExitStack()
        self._entered = True
        self._stack.callback(setattr, self, "_entered", False)
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()  # what did start is stopped again
            raise
        return self

    async def _start(self) -> None:
        await self.storage.open()
        self._stack.push_async_callback(self.storage.close)
        blobs: object = self.blobs  # a blob store may or may not need opening
        if isinstance(blobs, Lifecycle):
            await blobs.open()
            self._stack.push_async_callback(blobs.close)
        if not self._run_worker:
            return
        fetcher = self._fetcher
        if fetcher is None:
            httpx_fetcher = HttpxFetcher(fetch_options(self.settings))
            self._stack.push_async_callback(httpx_fetcher.aclose)
            fetcher = SampleFetcher(httpx_fetcher, own_hosts(self.settings))
        notifier = self._notifier
        if notifier is None:
            webhook = WebhookNotifier(
                timeout=self.settings.webhook_timeout,
                secret=self.settings.webhook_secret,
                allow_private_networks=self.settings.allow_private_networks,
                allowed_hosts=self.settings.webhook_hosts(),
                proxy=self.settings.outbound_proxy,
            )
            self._stack.push_async_callback(webhook.aclose)
            notifier = webhook
        self.worker = Worker(
            self.storage,
            fetcher,
            notifier,
            self.urls,
            worker_config(self.settings),
            blobs=self.blobs,
            clock=self._clock,
            metrics=self._metrics_sink(),
        )
        tasks = await self._stack.enter_async_context(anyio.create_task_group())
        stop = anyio.Event()
        self._stack.callback(stop.set)  # runs first on exit: the worker winds down
        tasks.start_soon(self.worker.run, stop)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def submit(
        self,
        csv: bytes,
        webhook_url: str | None = None,
        *,
        base_url: str | None = None,
        idempotency_key: str | None = None,
        owner: str | None = None,
        policy: OutputPolicy | None = None,
    ) -> str:
        """Validate and store a CSV; return its request id (see Service.submit).

        ``base_url`` is where its links will point (default: the configured one);
        ``owner`` tags it as that caller's (None: nobody's); ``policy`` says how its
        images are written (unset fields: the settings' defaults).
        """
        return await self.service.submit(
            csv,
            webhook_url,
            base_url=base_url or self.urls.base,
            idempotency_key=idempotency_key,
            owner=owner or "",
            policy=policy,
        )

    async def status(
        self,
        request_id: str,
        *,
        owner: str | None = None,
        detail: bool = True,
        after_row: int = 0,
        limit: int | None = None,
    ) -> StatusReport:
        """Return everything known about a request (only ``owner``'s, when given); with
        ``detail=False`` its status, counts and webhook without every image; with
        ``limit``, one page of products after ``after_row`` (see ``next_cursor``)."""
        return await self.service.status(
            request_id, owner=owner, detail=detail, after_row=after_row, limit=limit
        )

    async def output_csv(
        self,
        request_id: str,
        *,
        owner: str | None = None,
        base_url: str | None = None,
        image_url: Callable[[str], str] | None = None,
    ) -> str:
        """Return a request's output CSV (only ``owner``'s, when given).

        Its image links use the base URL the request was uploaded under, else
        ``base_url``, else the configured one; ``image_url`` (image id -> what to write)
        replaces the links altogether, e.g. with file paths.
        """
        image_url = image_url or await self._image_links(request_id, base_url)
        return await self.service.output_csv(request_id, image_url, owner=owner)

    async def stream_output_csv(
        self, request_id: str, *, owner: str | None = None, base_url: str | None = None
    ) -> AsyncIterator[str]:
        """Return the output CSV as chunks written at constant memory (the links as in
        :meth:`output_csv`); RequestNotFinished is raised before the first chunk."""
        image_url = await self._image_links(request_id, base_url)
        chunks = self.service.stream_output_csv(request_id, image_url, owner=owner)
        return await _primed(chunks)

    async def _image_links(self, request_id: str, base_url: str | None) -> Callable[[str], str]:
        """Return how a request's image links are written: under the base URL it was
        uploaded with, else ``base_url``, else the configured one."""
        record = await self.storage.get_request(request_id)
        return Urls(record.base_url or base_url or self.urls.base).image

    async def image(self, image_id: str) -> StoredImage:
        """Return a processed image."""
        return await self.service.image(image_id)

    async def retry_failed(self, request_id: str, *, owner: str | None = None) -> int:
        """Queue a final request's failed images again (not cancelled ones); return how
        many (RequestNotFinished while it is Pending)."""
        queued = await self.service.retry_failed(request_id, owner=owner)
        if queued and self.worker is not None:
            self.worker.wake()
        return queued

    async def history(
        self, *, owner: str | None = None, before: tuple[float, str] | None = None, limit: int = 20
    ) -> list[tuple[RequestRecord, Progress]]:
        """Return requests newest first with their progress (only ``owner``'s when given)."""
        return await self.service.history(owner=owner, before=before, limit=limit)

    async def stream_zip(
        self, request_id: str, *, owner: str | None = None
    ) -> AsyncIterator[bytes]:
        """Return a zip of the request's processed images as chunks (constant memory);
        errors (not found) are raised before the first chunk."""
        return await _primed(self.service.stream_zip(request_id, owner=owner))

    async def cancel_or_delete(self, request_id: str, *, owner: str | None = None) -> bool:
        """Cancel a Pending request (False) or delete a final one (True)."""
        deleted = await self.service.cancel_or_delete(request_id, owner=owner)
        if not deleted and self.worker is not None:
            self.worker.wake()
        return deleted

    async def ready(self) -> None:
        """Return if the store answers and the in-process worker (if any) runs; else raise
        StorageUnavailable (code ``worker_down`` for a stopped worker)."""
        try:
            await self.storage.ping()
        except StorageUnavailable:
            raise
        except Exception as exc:
            raise StorageUnavailable(f"storage did not answer: {exc}") from exc
        blobs: object = self.blobs
        if isinstance(blobs, Lifecycle):  # a bucket or a directory of its own
            try:
                await blobs.ping()
            except StorageUnavailable:
                raise
            except Exception as exc:
                raise StorageUnavailable(f"the blob store did not answer: {exc}") from exc
        if self.worker is not None and not self.worker.alive:
            raise StorageUnavailable("the in-process worker is not running", code="worker_down")

    def direct_link(self, image: ImageRecord) -> str | None:
        """Return a done image's address under IMGCOMPRESS_BLOB_PUBLIC_URL (a CDN or a
        public bucket), or None when there is none and /api/images/{id} serves it."""
        if image.blob_key is None or image.state is not ImageState.DONE:
            return None
        return self._public_link(image.blob_key, image.content_type)

    def _public_link(self, key: str, content_type: str | None) -> str | None:
        if not self.blob_public_url:
            return None
        return f"{self.blob_public_url}/{public_path(self.blobs, key, content_type)}"

    async def image_location(self, image_id: str) -> str | None:
        """Return where a processed image can be fetched without this service: its public
        URL, or a presigned link into the bucket (valid ``blob_presign_seconds``); None
        when the service serves the bytes itself (:meth:`image`). ``image_id`` is an
        output id (the stable link) or an image id, as for :meth:`image`; ImageNotFound
        if neither names a done image."""
        if self.blobs is None:
            return None
        key, content_type = await self.service.workflow.locate(image_id)
        direct = self._public_link(key, content_type or None)
        if direct is not None:
            return direct
        if isinstance(self.blobs, PresignsUrls):
            return await self.blobs.presigned_url(key, self.settings.blob_presign_seconds)
        return None

    async def queue_depth(self) -> int:
        """Return how many images wait to be claimed."""
        return await self.storage.queue_depth()

    async def wait(
        self,
        request_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the convenient API for embedders
        poll: float = 0.1,
    ) -> StatusReport:
        """Wait until a request is final and its webhook settled; return its status."""
        with anyio.fail_after(timeout):
            while True:
                report = await self.service.status(request_id)
                settled = all(d.state is not DeliveryState.PENDING for d in report.deliveries)
                webhook_queued = report.request.webhook_url is None or report.deliveries
                if report.request.finished_at is not None and settled and webhook_queued:
                    return report
                await anyio.sleep(poll)
